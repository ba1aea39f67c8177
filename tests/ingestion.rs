//! `POST /v1/events` and `GET /v1/players/{id}` over real HTTP, each on SQLite and on PostgreSQL.

use crate::support;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::server::{Backend, TestServer};

fn event(id: &str, kind: &str, player: &str, at: &str, payload: Value) -> Value {
    json!({"event_id": id, "event_type": kind, "player_id": player, "brand_id": "A",
           "occurred_at": at, "trace_id": format!("tr_{id}"), "payload": payload})
}

fn registered(id: &str, player: &str) -> Value {
    event(
        id,
        "player.registered",
        player,
        "2026-11-01T10:00:00Z",
        json!({
        "jurisdiction": "DE", "locale": "de-DE", "time_zone": "Europe/Berlin", "currency": "EUR",
        "email": "alex.muster@example.com", "phone": "+4915112345678", "birth_date": "1990-05-17"}),
    )
}

fn deposit(id: &str, player: &str, at: &str, amount: i64) -> Value {
    event(
        id,
        "payment.captured",
        player,
        at,
        json!({"payment_id": id, "amount_minor": amount, "currency": "EUR", "method": "card", "psp": "X"}),
    )
}

async fn one_event_is_accepted_once(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let e = deposit("e1", "p_1", "2026-11-20T10:00:00Z", 2500);
    let (status, first) = s.post(&key, "/v1/events", &e).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], json!("accepted"));
    let (status, again) = s.post(&key, "/v1/events", &e).await;
    assert_eq!(status, 202);
    assert_eq!(again["status"], json!("duplicate"));
    assert_eq!(again["seq"], first["seq"], "the original outcome");
    // The same id for another event is refused and changes nothing.
    let (status, body) =
        s.post(&key, "/v1/events", &deposit("e1", "p_1", "2026-11-20T10:00:00Z", 9999)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], json!("event_id_conflict"));
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 1);
}
both!(one_event_is_accepted_once_sqlite_and_postgres, one_event_is_accepted_once);

async fn fifty_concurrent_duplicates_are_stored_and_counted_once(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let e = deposit("dup", "p_dup", "2026-11-20T10:00:00Z", 1000);
    let posts = (0..50).map(|_| s.post(&key, "/v1/events", &e));
    let results = futures_join_all(posts).await;
    let accepted = results.iter().filter(|(st, b)| *st == 202 && b["status"] == "accepted").count();
    let duplicates = results.iter().filter(|(st, b)| *st == 202 && b["status"] == "duplicate").count();
    assert_eq!((accepted, duplicates), (1, 49), "{results:?}");
    let seqs: std::collections::HashSet<String> = results.iter().map(|(_, b)| b["seq"].to_string()).collect();
    assert_eq!(seqs.len(), 1);
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 1);
    s.settled().await;
    let (_, p) = s.get(&key, "/v1/players/p_dup").await;
    assert_eq!(p["features"]["dep_count_30d"].as_u64(), Some(1), "{p}");
}
both!(
    fifty_concurrent_duplicates_are_stored_and_counted_once_sqlite_and_postgres,
    fifty_concurrent_duplicates_are_stored_and_counted_once
);

async fn futures_join_all<F: std::future::Future<Output = (u16, Value)>>(
    fs: impl Iterator<Item = F>,
) -> Vec<(u16, Value)> {
    let handles: Vec<_> = fs.collect();
    let mut set = Vec::new();
    for f in handles {
        set.push(f);
    }
    // Poll them together.
    let mut out = Vec::new();
    let joined = async {
        let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
        let mut results: Vec<Option<(u16, Value)>> = vec![None; pinned.len()];
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, f) in pinned.iter_mut().enumerate() {
                if results[i].is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => results[i] = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await;
        results.into_iter().map(Option::unwrap).collect::<Vec<_>>()
    };
    out.extend(joined.await);
    out
}

async fn a_batch_reports_each_item_and_is_all_or_nothing(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let batch = json!([
        registered("b1", "p_b"),
        deposit("b2", "p_b", "2026-11-20T10:00:00Z", 500),
        registered("b1", "p_b")
    ]);
    let (status, body) = s.post(&key, "/v1/events", &batch).await;
    assert_eq!(status, 202, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["accepted", "accepted", "duplicate"]);
    assert_eq!(body["results"][1]["index"], json!(1));

    let before = s.count("SELECT COUNT(*) FROM events").await;
    let mut bad = deposit("b4", "p_b", "2026-11-20T10:00:00Z", 500);
    bad["payload"]["amount_minor"] = json!(5.25);
    let (status, body) =
        s.post(&key, "/v1/events", &json!([deposit("b3", "p_b", "2026-11-20T11:00:00Z", 100), bad])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], json!("invalid_batch"));
    assert_eq!(body["results"][0]["status"], json!("not_stored"));
    assert_eq!(body["results"][1]["error"]["field"], json!("payload.amount_minor"));
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, before, "nothing half-written");
}
both!(
    a_batch_reports_each_item_and_is_all_or_nothing_sqlite_and_postgres,
    a_batch_reports_each_item_and_is_all_or_nothing
);

async fn malformed_input_gets_its_error_code_and_writes_nothing(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let analyst = s.key(Role::Analyst, &["A"]).await;
    let good = deposit("m1", "p_m", "2026-11-20T10:00:00Z", 100);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        v
    };
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            with(&|v| v["event_type"] = json!("payment.teleported")),
            422,
            "unknown_event_type",
            Some("event_type"),
        ),
        (with(&|v| v["payload"]["currency"] = json!("EURO")), 422, "invalid_event", Some("payload.currency")),
        (
            with(&|v| v["payload"]["amount_minor"] = json!("100")),
            422,
            "invalid_event",
            Some("payload.amount_minor"),
        ),
        (
            with(&|v| {
                v["payload"].as_object_mut().unwrap().remove("payment_id");
            }),
            422,
            "invalid_event",
            Some("payload.payment_id"),
        ),
        (with(&|v| v["occurred_at"] = json!("2026-13-45")), 422, "invalid_event", Some("occurred_at")),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("player_id");
            }),
            422,
            "invalid_event",
            Some("player_id"),
        ),
        (with(&|v| v["brand_id"] = json!("B")), 403, "brand_not_allowed", Some("brand_id")),
        (json!("just a string"), 422, "invalid_event", None),
        (json!([]), 422, "bad_batch_size", None),
        (Value::Array(vec![good.clone(); 501]), 422, "bad_batch_size", None),
    ];
    for (body, status, code, field) in cases {
        let (st, resp) = s.post(&key, "/v1/events", &body).await;
        assert_eq!((st, resp["error"]["code"].as_str()), (status, Some(code)), "{resp}");
        if let Some(field) = field {
            assert_eq!(resp["error"]["field"], json!(field), "{resp}");
        }
    }
    let (st, resp) = s.post_raw(&key, "/v1/events", "{\"event_id\": ").await;
    assert_eq!((st, resp["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (st, resp) = s.post(&analyst, "/v1/events", &good).await;
    assert_eq!((st, resp["error"]["code"].as_str()), (403, Some("forbidden")));
    let (st, resp) = s.post("pb_not_a_key", "/v1/events", &good).await;
    assert_eq!((st, resp["error"]["code"].as_str()), (401, Some("unauthorized")));
    let r = s.http.post(format!("{}/v1/events", s.base)).json(&good).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(s.count("SELECT COUNT(*) FROM events").await, 0);
    assert_eq!(s.count("SELECT COUNT(*) FROM contacts").await, 0);
}
both!(
    malformed_input_gets_its_error_code_and_writes_nothing_sqlite_and_postgres,
    malformed_input_gets_its_error_code_and_writes_nothing
);

async fn the_profile_follows_the_events(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let now = jiff::Timestamp::now();
    let ago = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    let bet = |id: &str, days: i64, stake: i64, win: i64, provider: &str| {
        vec![
            event(
                &format!("{id}p"),
                "bet.placed",
                "p_1",
                &ago(days),
                json!({"bet_id": id, "stake_minor": stake, "currency": "EUR", "game_id": "g", "provider": provider, "category": "slots"}),
            ),
            event(
                &format!("{id}s"),
                "bet.settled",
                "p_1",
                &ago(days),
                json!({"bet_id": id, "stake_minor": stake, "win_minor": win, "currency": "EUR", "game_id": "g", "provider": provider, "category": "slots"}),
            ),
        ]
    };
    let mut events = vec![registered("r1", "p_1")];
    events.push(event(
        "s1",
        "session.started",
        "p_1",
        &ago(10),
        json!({"session_id": "s1", "device": "ios", "country": "DE"}),
    ));
    events.push(deposit("d1", "p_1", &ago(40), 10_000));
    events.push(deposit("d2", "p_1", &ago(10), 5_000));
    events.extend(bet("b1", 10, 1_000, 0, "studio_x"));
    events.extend(bet("b2", 10, 2_000, 500, "live_y"));
    events.extend(bet("b3", 10, 3_000, 0, "studio_x"));
    events.push(event("k1", "kyc.status_changed", "p_1", &ago(9), json!({"status": "verified"})));
    events.push(event(
        "l1",
        "rg.limit_set",
        "p_1",
        &ago(9),
        json!({"kind": "deposit", "period": "day", "amount_minor": 20000, "currency": "EUR"}),
    ));
    let (st, body) = s.post(&key, "/v1/events", &Value::Array(events)).await;
    assert_eq!(st, 202, "{body}");
    s.settled().await;
    let (st, p) = s.get(&key, "/v1/players/p_1").await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["jurisdiction"], json!("DE"));
    assert_eq!(p["age_band"], json!("35-54"));
    assert_eq!(p["kyc"], json!("verified"));
    assert_eq!(p["rg"]["deposit_limit_daily_minor"], json!(20000));
    let f = &p["features"];
    assert_eq!(f["dep_count_30d"], json!(1), "{p}");
    assert_eq!(f["dep_sum_30d_minor"], json!(5000));
    assert_eq!(f["net_loss_30d_minor"], json!(5500));
    assert_eq!(f["avg_stake_minor"], json!(2000));
    assert_eq!(f["fav_providers"], json!(["studio_x", "live_y"]));
    assert_eq!(f["days_since_last_seen"], json!(10));
    assert_eq!(f["days_since_last_deposit"], json!(10));
    assert_eq!(
        p["churn_inputs"],
        json!({"days_since_last_seen": 10, "sessions_7d": 0, "sessions_30d": 1, "dep_count_30d": 1})
    );
    let churn = f["churn_score"].as_f64().unwrap();
    assert!(churn > 0.0 && churn < 1.0, "{churn}");
    // Personal data never appears in the profile.
    let text = p.to_string();
    assert!(
        !text.contains("alex.muster") && !text.contains("1990") && !text.contains("+4915112345678"),
        "{text}"
    );
}
both!(the_profile_follows_the_events_sqlite_and_postgres, the_profile_follows_the_events);

async fn events_of_a_player_apply_in_order(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let mut batch = vec![registered("o0", "p_o")];
    for i in 1..=60 {
        let kind = if i % 2 == 1 { "self_exclusion.started" } else { "self_exclusion.ended" };
        batch.push(event(
            &format!("o{i}"),
            kind,
            "p_o",
            "2026-11-20T10:00:00Z",
            json!({"scope": "brand", "register": "own"}),
        ));
    }
    // 60 alternating events end with "ended" (even): the player is not excluded; one more "started" and they are.
    let (st, _) = s.post(&key, "/v1/events", &Value::Array(batch)).await;
    assert_eq!(st, 202);
    s.settled().await;
    let (_, p) = s.get(&key, "/v1/players/p_o").await;
    assert_eq!(p["rg"]["self_excluded"], json!(false), "{p}");
    let (st, _) = s
        .post(
            &key,
            "/v1/events",
            &event(
                "o61",
                "self_exclusion.started",
                "p_o",
                "2026-11-20T10:00:00Z",
                json!({"scope": "operator", "register": "GAMSTOP"}),
            ),
        )
        .await;
    assert_eq!(st, 202);
    s.settled().await;
    let (_, p) = s.get(&key, "/v1/players/p_o").await;
    assert_eq!(p["rg"]["self_excluded"], json!(true), "{p}");
    assert_eq!(p["self_exclusion_registers"], json!(["GAMSTOP"]));
}
both!(events_of_a_player_apply_in_order_sqlite_and_postgres, events_of_a_player_apply_in_order);

async fn a_key_of_brand_a_reads_nothing_of_brand_b(s: &TestServer) {
    let a = s.key(Role::Platform, &["A"]).await;
    let b = s.key(Role::Platform, &["B"]).await;
    let (st, _) = s.post(&a, "/v1/events", &registered("x1", "p_a")).await;
    assert_eq!(st, 202);
    s.settled().await;
    assert_eq!(s.get(&a, "/v1/players/p_a").await.0, 200);
    let (st, body) = s.get(&b, "/v1/players/p_a").await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(s.get(&b, "/v1/players/p_a?brand_id=A").await.0, 404);
    assert_eq!(s.get(&a, "/v1/players/nobody").await.0, 404);
}
both!(
    a_key_of_brand_a_reads_nothing_of_brand_b_sqlite_and_postgres,
    a_key_of_brand_a_reads_nothing_of_brand_b
);

async fn personal_data_is_stored_only_encrypted(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("pii1", "p_pii")).await.0, 202);
    s.settled().await;
    assert_eq!(s.count("SELECT COUNT(*) FROM contacts").await, 3);
    s.assert_nowhere(&["alex.muster@example.com", "+4915112345678", "1990-05-17"]).await;
}
both!(personal_data_is_stored_only_encrypted_sqlite_and_postgres, personal_data_is_stored_only_encrypted);

async fn a_refused_request_does_not_touch_those_committed_with_it(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(
        s.post(&key, "/v1/events", &deposit("taken", "p_g", "2026-11-20T10:00:00Z", 100)).await.0,
        202
    );
    // Concurrent requests share group commits; the one reusing "taken" for another body must fail alone.
    let mut bodies: Vec<Value> =
        (0..40).map(|i| deposit(&format!("g{i}"), "p_g", "2026-11-20T11:00:00Z", 100 + i)).collect();
    bodies.insert(
        17,
        json!([
            deposit("g_ok", "p_g", "2026-11-20T11:00:00Z", 1),
            deposit("taken", "p_g", "2026-11-20T10:00:00Z", 999)
        ]),
    );
    let results = futures_join_all(bodies.iter().map(|b| s.post(&key, "/v1/events", b))).await;
    let refused: Vec<usize> =
        results.iter().enumerate().filter(|(_, (st, _))| *st != 202).map(|(i, _)| i).collect();
    assert_eq!(refused, [17], "{results:?}");
    assert_eq!(results[17].0, 409);
    assert_eq!(results[17].1["error"]["field"], json!("[1].event_id"));
    assert_eq!(
        s.count("SELECT COUNT(*) FROM events").await,
        41,
        "the refused batch's first event was rolled back too"
    );
}
both!(
    a_refused_request_does_not_touch_those_committed_with_it_sqlite_and_postgres,
    a_refused_request_does_not_touch_those_committed_with_it
);

/// "At most a day ahead" is measured on the host's clock, whatever the machine's wall clock says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_are_bounded_by_the_hosts_clock() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else { return };
    let key = s.key(Role::Platform, &["A"]).await;
    s.clock.set(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72));
    let event = |id: &str, at: jiff::Timestamp| {
        json!({"event_id": id, "event_type": "player.registered", "player_id": "p_clock", "brand_id": "A",
               "occurred_at": at.to_string(),
               "payload": {"jurisdiction": "MT", "locale": "en", "time_zone": "UTC", "currency": "EUR"}})
    };
    let (st, v) = s.post(&key, "/v1/events", &event("c1", s.clock.now())).await;
    assert_eq!(st, 202, "{v}");
    let late = s.clock.now() + jiff::SignedDuration::from_hours(25);
    let (st, v) = s.post(&key, "/v1/events", &event("c2", late)).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("occurred_at")), "{v}");
    s.stop().await;
}
