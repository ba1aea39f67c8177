//! Consents (versioned, never overwritten) and the right to erasure, over real HTTP, on SQLite and
//! PostgreSQL.

use crate::support;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::server::TestServer;

fn registered(player: &str) -> Value {
    let mut e = support::registered(
        player,
        json!({"jurisdiction": "GB", "locale": "en-GB", "time_zone": "Europe/London",
        "currency": "GBP", "email": "jo.bloggs@example.co.uk", "phone": "+447700900123", "birth_date": "2001-02-03"}),
    );
    e["trace_id"] = json!("tr_client_7");
    e
}

async fn consents_are_versioned_and_never_overwritten(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("p_c")).await.0, 202);
    let (st, v1) = s.put(&key, "/v1/players/p_c/consents", &json!({"channels": {"email": true, "sms": true}, "products": {"casino": true}, "profiling": true, "source": "signup"})).await;
    assert_eq!(st, 200, "{v1}");
    assert_eq!(v1["version"], json!(1));
    let (st, v2) = s.put(&key, "/v1/players/p_c/consents", &json!({"channels": {"sms": false}})).await;
    assert_eq!(st, 200);
    assert_eq!(v2["version"], json!(2));
    assert_eq!(v2["consents"]["channels"], json!(["email"]));
    assert_eq!(v2["consents"]["products"], json!(["casino"]));

    let (st, h) = s.get(&key, "/v1/players/p_c/consents/history").await;
    assert_eq!(st, 200);
    let history = h["history"].as_array().unwrap();
    assert_eq!(history.len(), 5, "{h}");
    let sms: Vec<(i64, bool, &str)> = history
        .iter()
        .filter(|r| r["name"] == "sms")
        .map(|r| {
            (r["version"].as_i64().unwrap(), r["granted"].as_bool().unwrap(), r["source"].as_str().unwrap())
        })
        .collect();
    assert_eq!(sms, [(1, true, "signup"), (2, false, "preference_centre")], "both versions kept");

    s.settled().await;
    let (_, p) = s.get(&key, "/v1/players/p_c").await;
    assert_eq!(
        p["consents"],
        json!({"channels": ["email"], "products": ["casino"], "profiling": true}),
        "{p}"
    );
    assert_eq!(p["consent_version"], json!(2));

    for (body, field) in [
        (json!({"channels": {"fax": true}}), Some("channels.fax")),
        (json!({"products": {"lottery": true}}), Some("products.lottery")),
        (json!({}), None),
        (json!({"channels": {"email": "yes"}}), None),
    ] {
        let (st, e) = s.put(&key, "/v1/players/p_c/consents", &body).await;
        assert_eq!((st, e["error"]["code"].as_str()), (422, Some("invalid_consents")), "{body}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], json!(f));
        }
    }
    let (st, _) = s.put(&key, "/v1/players/nobody/consents", &json!({"profiling": false})).await;
    assert_eq!(st, 404);
    let other = s.key(Role::Platform, &["B"]).await;
    assert_eq!(s.put(&other, "/v1/players/p_c/consents", &json!({"profiling": false})).await.0, 404);
    assert_eq!(s.get(&other, "/v1/players/p_c/consents/history").await.0, 404);
    assert_eq!(s.count("SELECT COUNT(*) FROM consents").await, 5, "refused changes wrote nothing");
}
both!(consents_are_versioned_sqlite_and_postgres, consents_are_versioned_and_never_overwritten);

async fn erasure_leaves_no_personal_data(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("player_erase_me")).await.0, 202);
    let dep = json!({"event_id": "dep_e", "event_type": "payment.captured", "player_id": "player_erase_me", "brand_id": "A",
                     "occurred_at": "2026-11-20T10:00:00Z", "payload": {"payment_id": "pay1", "amount_minor": 5000, "currency": "GBP"}});
    assert_eq!(s.post(&key, "/v1/events", &dep).await.0, 202);
    assert_eq!(
        s.put(&key, "/v1/players/player_erase_me/consents", &json!({"channels": {"email": true}})).await.0,
        200
    );
    s.settled().await;
    // A message went to the player's inbox, with their first name in it.
    let marketing = s.key(Role::Marketing, &["A"]).await;
    let tpl = json!({"topic": "transactional", "body": "Deposit received, {{first_name}}"});
    assert_eq!(s.put(&marketing, "/admin/templates/tpl_dep/default", &tpl).await.0, 200);
    let msg = json!({"channel": "in_app", "player_id": "player_erase_me", "template_id": "tpl_dep",
                     "personalization": {"first_name": "Jolene"}});
    let r = s
        .http
        .post(format!("{}/v1/messaging/send", s.base))
        .bearer_auth(&key)
        .header("X-Idempotency-Key", "dep_msg_player_erase_me")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    support::eventually("the message in the inbox", std::time::Duration::from_secs(4), || async {
        let (_, inbox) = s.get(&key, "/v1/players/player_erase_me/inbox").await;
        inbox["messages"].as_array().is_some_and(|m| !m.is_empty()).then_some(())
    })
    .await;
    let deposits_before =
        s.count("SELECT CAST(COALESCE(SUM(deposit_sum), 0) AS BIGINT) FROM player_days").await;
    assert_eq!(s.get(&key, "/v1/players/player_erase_me").await.0, 200);

    let r = s
        .http
        .delete(format!("{}/v1/players/player_erase_me", s.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.get(&key, "/v1/players/player_erase_me").await.0, 404);
    let r = s
        .http
        .delete(format!("{}/v1/players/player_erase_me", s.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "already gone");

    assert_eq!(s.count("SELECT COUNT(*) FROM contacts").await, 0);
    // Pseudonymous aggregates remain, under an id that is not the player's.
    assert_eq!(
        s.count("SELECT CAST(COALESCE(SUM(deposit_sum), 0) AS BIGINT) FROM player_days").await,
        deposits_before
    );
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 2);
    s.assert_nowhere(&[
        "jo.bloggs@example.co.uk",
        "+447700900123",
        "2001-02-03",
        "player_erase_me",
        "tr_client_7",
        "Jolene",
    ])
    .await;
    // The erased player's events are refused from now on: a late or re-sent one cannot bring them back.
    let (st, body) = s.post(&key, "/v1/events", &registered("player_erase_me")).await;
    assert_eq!((st, body["error"]["code"].as_str()), (410, Some("player_erased")), "{body}");
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 2);
    // Behind another player's event in one request: the whole request is refused, at its index.
    let batch = json!([support::registered("p_new", json!({})), registered("player_erase_me")]);
    let (st, body) = s.post(&key, "/v1/events", &batch).await;
    assert_eq!((st, body["error"]["field"].as_str()), (410, Some("[1].player_id")), "{body}");
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 2);
    // A key of another brand cannot erase anything of brand A.
    assert_eq!(s.post(&key, "/v1/events", &registered("p_keep")).await.0, 202);
    let other = s.key(Role::Platform, &["B"]).await;
    let r = s.http.delete(format!("{}/v1/players/p_keep", s.base)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(s.count("SELECT COUNT(*) FROM contacts").await, 3);
}
both!(erasure_leaves_no_personal_data_sqlite_and_postgres, erasure_leaves_no_personal_data);
