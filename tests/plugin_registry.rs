//! The plugin registry over real HTTP, on SQLite and PostgreSQL: upload with validation, compliance
//! keys, signed approvals with four eyes, dual approval where a jurisdiction asks for it.

use crate::support;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::registry::{Officer, approve, manifest, officer, sign, upload};
use support::server::TestServer;

async fn upload_sign_approve(s: &TestServer) {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let carla = officer(s, &admin, "Carla Compliance").await;
    let dormant = support::wasm("dormant-depositor");
    let m = manifest("dormant-depositor", "1.0.0", "segment", &["DE"]);

    let (st, v) = upload(s, &operator, &m, dormant.clone()).await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["manifest"]["world"], json!("segment"));
    assert_eq!(v["wit_version"], json!("0.1.0"));
    assert_eq!(v["approved"], json!(false));
    let (st, again) = upload(s, &operator, &m, dormant.clone()).await;
    assert_eq!((st, again["id"].as_str()), (200, Some(id.as_str())), "same bytes: the existing version");
    let (st, e) = upload(s, &operator, &m, support::wasm("churn-risk")).await;
    assert_eq!((st, e["error"]["code"].as_str()), (409, Some("version_exists")));

    let signature = sign(s, &carla, &m, &dormant);
    let (st, v) = approve(s, &carla, &id, &signature).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["approved"], json!(true));
    assert_eq!(v["approvals"][0]["approver_holder"], json!("Carla Compliance"));
    let (st, e) = approve(s, &carla, &id, &signature).await;
    assert_eq!((st, e["error"]["code"].as_str()), (409, Some("conflict")), "once per key");

    let (_, listed) = s.get(&operator, "/admin/plugins").await;
    assert_eq!(listed["plugins"].as_array().unwrap().len(), 1);
    let (_, audit) = s.get(&admin, "/admin/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["signing_key.register", "plugin.upload", "plugin.approve"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    // Another brand sees nothing of it.
    let other = s.key_of(Role::Operator, &["B"], "Bert").await;
    assert_eq!(s.get(&other, &format!("/admin/plugins/{id}")).await.0, 404);
    assert_eq!(s.get(&other, "/admin/plugins").await.1["plugins"], json!([]));
}
both!(upload_sign_approve_sqlite_and_postgres, upload_sign_approve);

async fn broken_and_hostile_uploads_are_refused_with_the_reason(s: &TestServer) {
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let cases: Vec<(Value, Vec<u8>, u16, &str)> = vec![
        (
            manifest("x", "1.0.0", "bonus-rule", &["*"]),
            support::wasm("dormant-depositor"),
            422,
            "wrong_world",
        ),
        (
            manifest("x", "1.0.0", "segment", &["*"]),
            support::wasm("hostile-wrong-world"),
            422,
            "unknown_world",
        ),
        (
            manifest("x", "1.0.0", "segment", &["*"]),
            support::wasm("hostile-sneaky-import"),
            422,
            "disallowed_import",
        ),
        (
            manifest("x", "1.0.0", "segment", &["*"]),
            support::wasm("hostile-future-version"),
            422,
            "unsupported_version",
        ),
        (
            manifest("x", "1.0.0", "segment", &["*"]),
            support::wasm("hostile-bad-signature"),
            422,
            "bad_exports",
        ),
        (manifest("x", "1.0.0", "segment", &["*"]), b"\0asm\x01\0\0\0".to_vec(), 422, "not_a_component"),
        (
            manifest("x", "one", "segment", &["*"]),
            support::wasm("dormant-depositor"),
            422,
            "invalid_manifest",
        ),
        (json!({"name": "x"}), support::wasm("dormant-depositor"), 422, "invalid_manifest"),
    ];
    for (m, bytes, status, code) in cases {
        let (st, e) = upload(s, &operator, &m, bytes).await;
        assert_eq!((st, e["error"]["code"].as_str()), (status, Some(code)), "{m} → {e}");
    }
    let (_, e) =
        upload(s, &operator, &manifest("x", "one", "segment", &["*"]), support::wasm("dormant-depositor"))
            .await;
    assert_eq!(e["error"]["field"], json!("version"));
    let mut for_b = manifest("x", "1.0.0", "segment", &["*"]);
    for_b["brands"] = json!(["B"]);
    assert_eq!(upload(s, &operator, &for_b, support::wasm("dormant-depositor")).await.0, 404);
    let compliance = s.key_of(Role::Compliance, &["A"], "Carla Compliance").await;
    assert_eq!(
        upload(
            s,
            &compliance,
            &manifest("x", "1.0.0", "segment", &["*"]),
            support::wasm("dormant-depositor")
        )
        .await
        .0,
        403
    );
    assert_eq!(s.count("SELECT COUNT(*) FROM plugin_versions").await, 0, "nothing registered");
}
both!(
    broken_and_hostile_uploads_are_refused_sqlite_and_postgres,
    broken_and_hostile_uploads_are_refused_with_the_reason
);

async fn approvals_need_a_valid_signature_and_four_eyes(s: &TestServer) {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let carla = officer(s, &admin, "Carla Compliance").await;
    let dave = officer(s, &admin, "Dave Compliance").await;
    // Olga also holds a compliance key: she still may not approve her own upload.
    let olga = officer(s, &admin, "Olga Operator").await;
    let bytes = support::wasm("churn-risk");
    let m = manifest("churn-risk", "2.0.0", "segment", &["DE"]);
    let (_, v) = upload(s, &operator, &m, bytes.clone()).await;
    let id = v["id"].as_str().unwrap().to_string();

    let (st, e) = approve(s, &olga, &id, &sign(s, &olga, &m, &bytes)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("four_eyes")), "{e}");
    let (st, e) = approve(s, &carla, &id, "").await;
    assert_eq!((st, e["error"]["code"].as_str()), (422, Some("bad_signature")), "unsigned");
    let mut other = m.clone();
    other["jurisdictions"] = json!(["*"]);
    let (st, e) = approve(s, &carla, &id, &sign(s, &carla, &other, &bytes)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (422, Some("bad_signature")), "signed another manifest");
    let (st, e) = approve(s, &carla, &id, &sign(s, &carla, &m, &support::wasm("dormant-depositor"))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (422, Some("bad_signature")), "signed other bytes");
    let carla_with_daves_key = Officer {
        api_key: carla.api_key.clone(),
        key_file: dave.key_file.clone(),
        signing_key_id: dave.signing_key_id.clone(),
    };
    let (st, e) = approve(s, &carla_with_daves_key, &id, &sign(s, &dave, &m, &bytes)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("forbidden")), "someone else's key");

    let (st, _) = s.delete(&admin, &format!("/admin/signing-keys/{}", dave.signing_key_id)).await;
    assert_eq!(st, 200);
    let (st, e) = approve(s, &dave, &id, &sign(s, &dave, &m, &bytes)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("key_revoked")));
    assert_eq!(s.count("SELECT COUNT(*) FROM approvals").await, 0);

    let (st, v) = approve(s, &carla, &id, &sign(s, &carla, &m, &bytes)).await;
    assert_eq!((st, v["approved"].as_bool()), (201, Some(true)));
    let approval = v["approvals"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = s.delete(&carla.api_key, &format!("/admin/plugins/{id}/approvals/{approval}")).await;
    assert_eq!((st, v["approved"].as_bool()), (200, Some(false)), "revoked approval: no longer approved");
}
both!(
    approvals_need_a_valid_signature_and_four_eyes_sqlite_and_postgres,
    approvals_need_a_valid_signature_and_four_eyes
);

async fn a_dual_approval_jurisdiction_needs_two_distinct_approvers(s: &TestServer) {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let carla = officer(s, &admin, "Carla Compliance").await;
    let dave = officer(s, &admin, "Dave Compliance").await;
    let bytes = support::wasm("next-best-offer-uk");
    let m = manifest("next-best-offer", "1.0.0-uk", "offer-scorer", &["GB"]);
    let (st, v) = upload(s, &operator, &m, bytes.clone()).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["approvals_required"], json!(2));
    let id = v["id"].as_str().unwrap().to_string();
    let (_, v) = approve(s, &carla, &id, &sign(s, &carla, &m, &bytes)).await;
    assert_eq!(v["approved"], json!(false), "one approver of two");
    let (_, v) = approve(s, &dave, &id, &sign(s, &dave, &m, &bytes)).await;
    assert_eq!(v["approved"], json!(true), "{v}");
}
both!(
    a_dual_approval_jurisdiction_needs_two_distinct_approvers_sqlite_and_postgres,
    a_dual_approval_jurisdiction_needs_two_distinct_approvers
);
