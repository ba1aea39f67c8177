//! `/admin/keys` and the audit log over real HTTP, on SQLite and PostgreSQL; `pitboss audit verify`
//! finds an edited or deleted entry.

use crate::support;

use std::process::Command;

use pitboss::auth::Role;
use serde_json::json;
use support::server::TestServer;

async fn admins_manage_keys_within_their_brands(s: &TestServer) {
    let admin_a = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let admin_b = s.key_of(Role::Admin, &["B"], "Bob Admin").await;
    let platform = s.key(Role::Platform, &["A"]).await;

    let (st, created) = s
        .post(&admin_a, "/admin/keys", &json!({"role": "platform", "brands": ["A"], "holder": "PAM A"}))
        .await;
    assert_eq!(st, 201, "{created}");
    let new_key = created["key"].as_str().unwrap().to_string();
    let new_id = created["id"].as_str().unwrap().to_string();
    let event = json!({"event_id": "k1", "event_type": "session.started", "player_id": "p", "brand_id": "A",
                       "occurred_at": "2026-11-20T10:00:00Z", "payload": {"session_id": "s"}});
    assert_eq!(s.post(&new_key, "/v1/events", &event).await.0, 202);

    // Another brand's keys are "not found"; other roles are "forbidden".
    let (st, e) =
        s.post(&admin_a, "/admin/keys", &json!({"role": "platform", "brands": ["B"], "holder": "x"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, e) =
        s.post(&platform, "/admin/keys", &json!({"role": "admin", "brands": ["A"], "holder": "x"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("forbidden")));
    let (st, e) =
        s.post(&admin_a, "/admin/keys", &json!({"role": "croupier", "brands": ["A"], "holder": "x"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (422, Some("invalid_key_request")));

    let (_, listed) = s.get(&admin_a, "/admin/keys").await;
    let holders: Vec<&str> =
        listed["keys"].as_array().unwrap().iter().map(|k| k["holder"].as_str().unwrap()).collect();
    assert!(holders.contains(&"PAM A") && !holders.contains(&"Bob Admin"), "{holders:?}");
    assert!(!listed.to_string().contains(&new_key), "keys are never listed");

    assert_eq!(s.delete(&admin_b, &format!("/admin/keys/{new_id}")).await.0, 404);
    assert_eq!(s.post(&new_key, "/v1/events", &event).await.0, 202, "still valid");
    let (st, _) = s.delete(&admin_a, &format!("/admin/keys/{new_id}")).await;
    assert_eq!(st, 200);
    let (st, e) = s.post(&new_key, "/v1/events", &event).await;
    assert_eq!((st, e["error"]["code"].as_str()), (401, Some("unauthorized")), "revoked at once");
    assert_eq!(s.delete(&admin_a, &format!("/admin/keys/{new_id}")).await.0, 404, "already revoked");

    let (st, audit) = s.get(&admin_a, "/admin/audit").await;
    assert_eq!(st, 200);
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor_holder"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("key.create", "Ada Admin")) && actions.contains(&("key.revoke", "Ada Admin")),
        "{actions:?}"
    );
    assert!(
        audit["entries"].as_array().unwrap().iter().all(|e| e["brands"] == json!(["A"])),
        "B's entries are hidden"
    );
    assert_eq!(s.get(&platform, "/admin/audit").await.0, 403);
}
both!(admins_manage_keys_within_their_brands_sqlite_and_postgres, admins_manage_keys_within_their_brands);

fn verify(url: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["audit", "verify", "--database-url", url])
        .output()
        .unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

async fn audit_verify_finds_an_edited_or_deleted_entry(s: &TestServer) {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    for i in 0..5 {
        let (st, _) = s
            .post(
                &admin,
                "/admin/keys",
                &json!({"role": "analyst", "brands": ["A"], "holder": format!("analyst {i}")}),
            )
            .await;
        assert_eq!(st, 201);
    }
    let (code, v) = verify(&s.test_db.url);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["entries"], json!(6));

    sqlx::query("UPDATE audit_log SET detail = '{\"role\":\"admin\"}' WHERE seq = 3")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let (code, v) = verify(&s.test_db.url);
    assert_eq!(code, 1);
    assert_eq!(v["broken_at"][0], json!(3), "{v}");

    // Deleting the edited entry instead leaves a hole: the next entry's link to its predecessor breaks.
    sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(&s.db.pool).await.unwrap();
    let (code, v) = verify(&s.test_db.url);
    assert_eq!(code, 1);
    assert_eq!(v["broken_at"][0], json!(4), "the entry after the hole: {v}");
}
both!(
    audit_verify_finds_an_edited_or_deleted_entry_sqlite_and_postgres,
    audit_verify_finds_an_edited_or_deleted_entry
);
