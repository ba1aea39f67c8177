//! Bindings, hot swaps and decisions over real HTTP, on SQLite and PostgreSQL: the whole lifecycle with
//! three keys, a swap under load with no failed call, rollback, unbinding on revoked approval, integrity
//! checks that make altered versions fail closed, and decision records naming what ran.

use crate::support;

use std::collections::HashMap;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::registry::{Officer, approved, manifest, officer};
use support::server::TestServer;

fn register(player: &str, jurisdiction: &str) -> Value {
    support::registered(
        player,
        json!({"jurisdiction": jurisdiction, "locale": "en-GB", "time_zone": "Europe/London"}),
    )
}

struct Team {
    admin: String,
    operator: String,
    platform: String,
    carla: Officer,
    dave: Officer,
}

async fn team(s: &TestServer) -> Team {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    Team {
        operator: s.key_of(Role::Operator, &["A"], "Olga Operator").await,
        platform: s.key_of(Role::Platform, &["A"], "PAM").await,
        carla: officer(s, &admin, "Carla Compliance").await,
        dave: officer(s, &admin, "Dave Compliance").await,
        admin,
    }
}

/// dormant-depositor 1.0.0 for DE, approved by Carla.
async fn approved_dormant(s: &TestServer, t: &Team) -> String {
    let m = manifest("dormant-depositor", "1.0.0", "segment", &["DE"]);
    approved(s, &t.operator, &[&t.carla], "dormant-depositor", &m).await
}

async fn bind(s: &TestServer, t: &Team, jurisdiction: &str, plugin_id: &str, config: Value) -> (u16, Value) {
    s.post(
        &t.operator,
        "/admin/bindings",
        &json!({"brand_id": "A", "jurisdiction": jurisdiction, "plugin_id": plugin_id, "config": config}),
    )
    .await
}

async fn players(s: &TestServer, t: &Team, list: &[(&str, &str)]) {
    for (p, j) in list {
        assert_eq!(s.post(&t.platform, "/v1/events", &register(p, j)).await.0, 202);
    }
    s.settled().await;
}

async fn the_lifecycle_with_three_keys(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE"), ("p_mt", "MT")]).await;
    let dormant = approved_dormant(s, &t).await;
    // A version for every jurisdiction may decide in GB, which asks for two approvers.
    let churn = approved(
        s,
        &t.operator,
        &[&t.carla, &t.dave],
        "churn-risk",
        &manifest("churn-risk", "1.0.0", "segment", &["*"]),
    )
    .await;

    let (st, e) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (409, Some("no_binding")));
    let (st, b) = bind(s, &t, "DE", &dormant, json!({})).await;
    assert_eq!(st, 201, "{b}");
    let (st, e) = bind(s, &t, "NL", &dormant, json!({})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("forbidden")), "a DE version is not for NL");
    let (st, e) = bind(s, &t, "*", &dormant, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "nor the default for every jurisdiction"
    );
    assert_eq!(bind(s, &t, "*", &churn, json!({"threshold": "0.1"})).await.0, 201);
    let (st, e) = s
        .post(
            &t.platform,
            "/admin/bindings",
            &json!({"brand_id": "A", "jurisdiction": "DE", "plugin_id": dormant}),
        )
        .await;
    assert_eq!(st, 403, "{e}");

    // p_de: the DE binding (dormant-depositor); p_mt: the brand default (churn-risk, configured).
    let (st, d) =
        s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de", "trace_id": "tr_1"})).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["plugin"]["name"], json!("dormant-depositor"));
    assert_eq!(d["plugin"]["binding_id"], b["id"]);
    assert_eq!(d["decision"]["member"], json!(false), "registered today-ish, no e-mail consent: {d}");
    let (st, d) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_mt"})).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["plugin"]["name"], json!("churn-risk"));

    let analyst = s.key_of(Role::Analyst, &["A"], "Ann Analyst").await;
    let (st, r) = s.get(&analyst, "/admin/decisions?player_id=p_de").await;
    assert_eq!(st, 200);
    let rec = &r["decisions"][0];
    assert_eq!(rec["plugin_id"], json!(dormant));
    assert_eq!(rec["binding_id"], b["id"]);
    assert_eq!(rec["outcome"], json!("ok"));
    assert_eq!(rec["trace_id"], json!("tr_1"));
    assert_eq!(rec["output"]["member"], json!(false));
    assert_eq!(rec["input_hash"].as_str().unwrap().len(), 64);
    assert!(rec["fuel"].as_i64().unwrap() > 0);
    let other = s.key_of(Role::Analyst, &["B"], "Bea").await;
    let (st, r) = s.get(&other, "/admin/decisions?player_id=p_de").await;
    assert_eq!((st, &r["decisions"]), (200, &json!([])), "brand B has no such decisions");
    assert_eq!(s.get(&other, "/admin/decisions?player_id=p_de&brand_id=A").await.0, 404);
    assert_eq!(s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "nobody"})).await.0, 404);
    let _ = &t.admin;
}
both!(the_lifecycle_with_three_keys_sqlite_and_postgres, the_lifecycle_with_three_keys);

fn offer_request(player: &str) -> Value {
    json!({"player_id": player,
           "candidates": [
               {"template_id": "dm", "kind": "deposit_match", "max_percent": 100, "max_cap_minor": 10000, "max_wager_multiplier": 35, "max_validity_hours": 168},
               {"template_id": "cb", "kind": "cashback", "max_percent": 10, "max_cap_minor": 2000, "max_wager_multiplier": 5, "max_validity_hours": 48}],
           "context": {"intent": "reengage", "channel": "email"}})
}

async fn a_hot_swap_under_load_fails_no_call(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_gb", "GB")]).await;
    let default = approved(
        s,
        &t.operator,
        &[&t.carla, &t.dave],
        "next-best-offer",
        &manifest("next-best-offer", "1.0.0", "offer-scorer", &["*"]),
    )
    .await;
    // GB asks for two approvers.
    let uk = approved(
        s,
        &t.operator,
        &[&t.carla, &t.dave],
        "next-best-offer-uk",
        &manifest("next-best-offer", "1.0.0-uk", "offer-scorer", &["GB"]),
    )
    .await;
    assert_eq!(bind(s, &t, "GB", &default, json!({})).await.0, 201);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (base, key, stop) = (s.base.clone(), t.platform.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut seen: Vec<(String, u64)> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || seen.is_empty() {
                    let r = http
                        .post(format!("{base}/v1/decisions/offer-scorer"))
                        .bearer_auth(&key)
                        .json(&offer_request("p_gb"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
                    let body: Value = r.json().await.unwrap();
                    let max_wager = body["decision"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o["params"]["wager_multiplier"].as_u64().unwrap())
                        .max()
                        .unwrap();
                    seen.push((body["plugin"]["plugin_id"].as_str().unwrap().to_string(), max_wager));
                }
                seen
            })
        })
        .collect();
    for target in [&uk, &default, &uk] {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        assert_eq!(bind(s, &t, "GB", target, json!({})).await.0, 201);
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut by_version: HashMap<String, u64> = HashMap::new();
    for c in clients {
        for (plugin, max_wager) in c.await.expect("no client saw a failed call") {
            // Each answer is consistent with the version that gave it.
            if plugin == uk {
                assert!(max_wager <= 10)
            } else {
                assert_eq!(max_wager, 35)
            }
            *by_version.entry(plugin).or_default() += 1;
        }
    }
    assert!(by_version.len() == 2, "both versions answered: {by_version:?}");
    // Every decision record names the version that ran it.
    let analyst = s.key_of(Role::Analyst, &["A"], "Ann").await;
    let (_, r) = s.get(&analyst, "/admin/decisions?player_id=p_gb&limit=1000").await;
    let mut recorded: HashMap<String, u64> = HashMap::new();
    for d in r["decisions"].as_array().unwrap() {
        assert_eq!(d["outcome"], json!("ok"));
        *recorded.entry(d["plugin_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(recorded, by_version);

    // Rollback goes back to the version bound before.
    let (st, b) = s
        .post(
            &t.operator,
            "/admin/bindings/rollback",
            &json!({"brand_id": "A", "jurisdiction": "GB", "world": "offer-scorer"}),
        )
        .await;
    assert_eq!((st, b["plugin_id"].as_str()), (200, Some(default.as_str())), "{b}");
    let (_, all) = s.get(&t.operator, "/admin/bindings").await;
    assert_eq!(all["current"].as_array().unwrap().len(), 1);
    assert_eq!(all["history"].as_array().unwrap().len(), 4);
}
both!(a_hot_swap_under_load_fails_no_call_sqlite_and_postgres, a_hot_swap_under_load_fails_no_call);

async fn a_revoked_approval_unbinds_the_version(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE")]).await;
    let v = approved_dormant(s, &t).await;
    assert_eq!(bind(s, &t, "DE", &v, json!({})).await.0, 201);
    assert_eq!(s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await.0, 200);
    let (_, view) = s.get(&t.operator, &format!("/admin/plugins/{v}")).await;
    let approval = view["approvals"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(s.delete(&t.carla.api_key, &format!("/admin/plugins/{v}/approvals/{approval}")).await.0, 200);
    let (_, all) = s.get(&t.operator, "/admin/bindings").await;
    assert_eq!(all["current"], json!([]), "unbound everywhere");
    let (st, e) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (409, Some("no_binding")));
    let (st, e) = bind(s, &t, "DE", &v, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "an unapproved version cannot be bound"
    );
}
both!(a_revoked_approval_unbinds_the_version_sqlite_and_postgres, a_revoked_approval_unbinds_the_version);

async fn altered_bytes_or_manifest_fail_closed(s: &mut TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE")]).await;
    let v = approved_dormant(s, &t).await;
    assert_eq!(bind(s, &t, "DE", &v, json!({})).await.0, 201);
    let (_, view) = s.get(&t.operator, &format!("/admin/plugins/{v}")).await;
    let blob = s.data_dir.path().join("plugins").join(format!("{}.wasm", view["sha256"].as_str().unwrap()));
    let pristine = std::fs::read(&blob).unwrap();

    // Bytes swapped for another (valid!) plugin in storage.
    std::fs::write(&blob, support::wasm("churn-risk")).unwrap();
    s.restart().await;
    let (st, e) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (503, Some("integrity_failed")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("sha256"));

    // Bytes back, but the manifest row widened to every jurisdiction.
    std::fs::write(&blob, &pristine).unwrap();
    sqlx::query("UPDATE plugin_versions SET manifest = REPLACE(manifest, '[\"DE\"]', '[\"*\"]')")
        .execute(&s.db.pool)
        .await
        .unwrap();
    s.restart().await;
    let (st, e) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (503, Some("integrity_failed")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("approvals verify"));

    let (_, all) = s.get(&t.operator, "/admin/bindings").await;
    assert!(all["integrity_failures"].as_u64().unwrap() >= 1, "refusals are counted: {all}");
    let analyst = s.key_of(Role::Analyst, &["A"], "Ann").await;
    let (_, r) = s.get(&analyst, "/admin/decisions?player_id=p_de").await;
    let outcomes: Vec<&str> =
        r["decisions"].as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["integrity_failed", "integrity_failed"]);

    // Restored: runs again.
    sqlx::query("UPDATE plugin_versions SET manifest = REPLACE(manifest, '[\"*\"]', '[\"DE\"]')")
        .execute(&s.db.pool)
        .await
        .unwrap();
    s.restart().await;
    assert_eq!(s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_bytes_or_manifest_fail_closed_sqlite() {
    if let Some(mut s) = TestServer::start(support::server::Backend::Sqlite).await {
        altered_bytes_or_manifest_fail_closed(&mut s).await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_bytes_or_manifest_fail_closed_postgres() {
    if let Some(mut s) = TestServer::start(support::server::Backend::Postgres).await {
        altered_bytes_or_manifest_fail_closed(&mut s).await;
        s.stop().await;
    }
}

/// `pitboss plugin …` against the running host, as each person runs it with their own key.
fn cli(s: &TestServer, key: &str, args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(args)
        .env("PITBOSS_URL", &s.base)
        .env("PITBOSS_API_KEY", key)
        .output()
        .unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

async fn the_lifecycle_from_a_terminal(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE")]).await;
    let dir = s.data_dir.path();
    let m = manifest("churn-risk", "3.0.0", "segment", &["DE"]);
    std::fs::write(dir.join("m.json"), m.to_string()).unwrap();
    std::fs::write(dir.join("p.wasm"), support::wasm("churn-risk")).unwrap();
    let path = |f: &str| dir.join(f).display().to_string();

    let (code, v) =
        cli(s, &t.operator, &["plugin", "upload", "--manifest", &path("m.json"), "--wasm", &path("p.wasm")]);
    assert_eq!(code, 0, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let signature = support::registry::sign(s, &t.carla, &m, &support::wasm("churn-risk"));
    let (code, e) = cli(
        s,
        &t.operator,
        &[
            "plugin",
            "approve",
            "--id",
            &id,
            "--signing-key-id",
            &t.carla.signing_key_id,
            "--signature",
            &signature,
        ],
    );
    assert_eq!((code, e["error"]["code"].as_str()), (1, Some("forbidden")), "an operator cannot approve");
    let (code, v) = cli(
        s,
        &t.carla.api_key,
        &[
            "plugin",
            "approve",
            "--id",
            &id,
            "--signing-key-id",
            &t.carla.signing_key_id,
            "--signature",
            &signature,
        ],
    );
    assert_eq!((code, v["approved"].as_bool()), (0, Some(true)), "{v}");
    let (code, v) = cli(
        s,
        &t.operator,
        &[
            "plugin",
            "bind",
            "--id",
            &id,
            "--brand",
            "A",
            "--jurisdiction",
            "DE",
            "--config",
            "threshold=0.01",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["config"]["threshold"], json!("0.01"));
    let (code, v) = cli(s, &t.operator, &["plugin", "list"]);
    assert_eq!(code, 0);
    assert_eq!(v["plugins"][0]["id"], json!(id));
    assert_eq!(v["bindings"][0]["plugin_id"], json!(id));
    let (st, d) = s.post(&t.platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
    assert_eq!(st, 200);
    assert_eq!(d["plugin"]["version"], json!("3.0.0"));
    let (code, e) = cli(
        s,
        &t.operator,
        &["plugin", "rollback", "--brand", "A", "--jurisdiction", "DE", "--world", "segment"],
    );
    assert_eq!((code, e["error"]["code"].as_str()), (1, Some("not_found")), "nothing to roll back to: {e}");
    let (code, _) = cli(s, "pb_wrong", &["plugin", "list"]);
    assert_eq!(code, 1);
    let _ = &t.admin;
}
both!(the_lifecycle_from_a_terminal_sqlite_and_postgres, the_lifecycle_from_a_terminal);

async fn another_brand_sees_and_touches_nothing(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE")]).await;
    let v = approved_dormant(s, &t).await;
    let (_, b) = bind(s, &t, "DE", &v, json!({})).await;
    let (_, view) = s.get(&t.operator, &format!("/admin/plugins/{v}")).await;
    let approval = view["approvals"][0]["id"].as_str().unwrap().to_string();

    let admin_b = s.key_of(Role::Admin, &["B"], "Bob Admin").await;
    let operator_b = s.key_of(Role::Operator, &["B"], "Bert Operator").await;
    let analyst_b = s.key_of(Role::Analyst, &["B"], "Bea Analyst").await;
    let platform_b = s.key_of(Role::Platform, &["B"], "PAM B").await;
    let officer_b = support::registry::officer_of(s, &admin_b, "Betty Compliance", "B").await;
    let cases: Vec<(u16, Value)> = vec![
        s.get(&operator_b, &format!("/admin/plugins/{v}")).await,
        s.post(
            &officer_b.api_key,
            &format!("/admin/plugins/{v}/approvals"),
            &json!({"signing_key_id": officer_b.signing_key_id, "signature": "00"}),
        )
        .await,
        s.delete(&officer_b.api_key, &format!("/admin/plugins/{v}/approvals/{approval}")).await,
        s.post(
            &operator_b,
            "/admin/bindings",
            &json!({"brand_id": "A", "jurisdiction": "DE", "plugin_id": v}),
        )
        .await,
        s.post(
            &operator_b,
            "/admin/bindings",
            &json!({"brand_id": "B", "jurisdiction": "DE", "plugin_id": v}),
        )
        .await,
        s.post(
            &operator_b,
            "/admin/bindings/rollback",
            &json!({"brand_id": "A", "jurisdiction": "DE", "world": "segment"}),
        )
        .await,
        s.delete(&admin_b, &format!("/admin/signing-keys/{}", t.carla.signing_key_id)).await,
        s.post(
            &admin_b,
            "/admin/signing-keys",
            &json!({"holder": "x", "public_key": "00".repeat(32), "brands": ["A"]}),
        )
        .await,
        s.get(&analyst_b, "/admin/decisions?player_id=p_de&brand_id=A").await,
        s.post(&platform_b, "/v1/decisions/segment", &json!({"player_id": "p_de", "brand_id": "A"})).await,
        s.get(&platform_b, "/v1/players/p_de?brand_id=A").await,
    ];
    for (i, (st, body)) in cases.iter().enumerate() {
        assert_eq!((*st, body["error"]["code"].as_str()), (404, Some("not_found")), "case {i}: {body}");
    }
    let empty_lists: Vec<(u16, Value)> = vec![
        s.get(&operator_b, "/admin/plugins").await,
        s.get(&operator_b, "/admin/bindings").await,
        s.get(&admin_b, "/admin/keys").await,
    ];
    assert_eq!(empty_lists[0].1["plugins"], json!([]));
    assert_eq!(empty_lists[1].1["current"], json!([]));
    assert!(!empty_lists[2].1.to_string().contains("Olga Operator"));
    let (_, audit) = s.get(&admin_b, "/admin/audit").await;
    assert!(audit["entries"].as_array().unwrap().iter().all(|e| e["brands"] != json!(["A"])), "{audit}");
    // Nothing changed for brand A.
    let (_, all) = s.get(&t.operator, "/admin/bindings").await;
    assert_eq!(all["current"][0]["id"], b["id"]);
}
both!(another_brand_sees_and_touches_nothing_sqlite_and_postgres, another_brand_sees_and_touches_nothing);

async fn a_binding_reaches_another_host_process_within_seconds(s: &TestServer) {
    let t = team(s).await;
    players(s, &t, &[("p_de", "DE")]).await;
    let v1 = approved_dormant(s, &t).await;
    let v2 = approved(
        s,
        &t.operator,
        &[&t.carla],
        "churn-risk",
        &manifest("churn-risk", "1.0.0", "segment", &["DE"]),
    )
    .await;
    assert_eq!(bind(s, &t, "DE", &v1, json!({})).await.0, 201);
    let (other, stop, task) = s.second_host().await;
    let http = reqwest::Client::new();
    let ask = || async {
        let r = http
            .post(format!("{other}/v1/decisions/segment"))
            .bearer_auth(&t.platform)
            .json(&json!({"player_id": "p_de"}))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                r.json::<Value>().await.unwrap()["plugin"]["plugin_id"].as_str().map(String::from)
            }
            _ => None,
        }
    };
    let answer =
        support::eventually("the second host answering", std::time::Duration::from_secs(5), &ask).await;
    assert_eq!(answer, v1, "the second host started with the binding");
    assert_eq!(bind(s, &t, "DE", &v2, json!({})).await.0, 201);
    let started = std::time::Instant::now();
    while ask().await.as_deref() != Some(v2.as_str()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the rebinding never reached the other host"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
both!(
    a_binding_reaches_another_host_process_sqlite_and_postgres,
    a_binding_reaches_another_host_process_within_seconds
);

/// Binds and rollbacks back to back while refreshes of the snapshot run all the time (as the background
/// refresh and other hosts' changes make them): once a bind has returned, no read ever sees the binding
/// it replaced — an older snapshot never overwrites a newer one.
async fn a_swap_never_goes_back(s: &TestServer) {
    use pitboss::plugins::registry::{BlobStore, Registry};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = team(s).await;
    let first = approved_dormant(s, &t).await;
    let second = approved(
        s,
        &t.operator,
        &[&t.carla],
        "churn-risk",
        &manifest("churn-risk", "1.0.0", "segment", &["DE"]),
    )
    .await;
    let runtime = Arc::new(support::cached_runtime());
    let blobs = BlobStore::open(&s.data_dir.path().join("plugins")).unwrap();
    let registry = Arc::new(Registry::open(s.db.clone(), blobs, runtime, Default::default()).await.unwrap());
    let operator = pitboss::auth::Principal {
        key_id: "key_test".into(),
        role: Role::Operator,
        brands: vec!["A".into()],
        holder: "Olga Operator".into(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let refreshers: Vec<_> = (0..3)
        .map(|_| {
            let (registry, stop) = (registry.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    registry.reload().await.unwrap();
                }
            })
        })
        .collect();
    let mut stale = 0;
    for round in 0..80 {
        let target = if round % 2 == 0 { &first } else { &second };
        registry
            .bind(&operator, "A", "DE", "", target, Default::default(), Default::default())
            .await
            .unwrap();
        for _ in 0..20 {
            let live = registry.snapshot().resolve("A", "DE", pitboss::plugins::World::Segment, "").unwrap();
            stale += usize::from(&live.plugin_id != target);
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in refreshers {
        r.await.unwrap();
    }
    assert_eq!(stale, 0, "reads after a bind had returned that saw the binding it replaced");
}
both!(a_swap_never_goes_back_sqlite_and_postgres, a_swap_never_goes_back);

/// The use cases need no socket: a second host core on the same database (as a bus consumer, a sweep or
/// the CLI would hold) ingests an event, takes a decision and sends a message through the same services
/// the HTTP API calls; the decision is recorded with its version, the message is in the outbox.
async fn a_decision_and_a_send_without_http(s: &TestServer) {
    use pitboss::messaging::{SendRequest, send};
    let t = team(s).await;
    let plugin_id = approved_dormant(s, &t).await;
    assert_eq!(bind(s, &t, "DE", &plugin_id, json!({})).await.0, 201);
    let options = pitboss::config::ServeOptions {
        data_dir: s.data_dir.path().to_path_buf(),
        code_cache: Some(support::code_cache()),
        dual_approval: vec![],
        require_impact: vec![],
        config: None,
        settings: Default::default(),
        clock: s.clock.clone(),
    };
    let (key, _) = pitboss::store::contacts::ContactsKey::generate();
    let core = pitboss::core::Core::open(s.db.clone(), key, &options).await.unwrap();

    let event = pitboss::events::validate(&register("p_core", "DE"), jiff::Timestamp::now()).unwrap();
    core.append(vec![event]).await.unwrap();
    let decided = pitboss::decisions::decide(
        &core,
        &pitboss::decisions::DecisionRequest {
            brand: "A".into(),
            player_id: "p_core".into(),
            world: pitboss::plugins::World::Segment,
            segment: None,
            trace_id: Some("tr_core".into()),
            event: None,
            bonuses: vec![],
            candidates: vec![],
            context: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(decided.plugin.plugin_id, plugin_id);
    let (_, records) = s.get(&t.admin, "/admin/decisions?player_id=p_core").await;
    let record = &records["decisions"][0];
    assert_eq!(
        (
            record["seq"].as_i64(),
            record["plugin_id"].as_str(),
            record["outcome"].as_str(),
            record["trace_id"].as_str()
        ),
        (Some(decided.decision_seq), Some(plugin_id.as_str()), Some("ok"), Some("tr_core")),
        "{records}"
    );

    let marketing = pitboss::auth::Principal {
        key_id: "key_core".into(),
        role: Role::Marketing,
        brands: vec!["A".into()],
        holder: "Mia Marketing".into(),
    };
    let template = pitboss::delivery::templates::TemplateInput {
        topic: pitboss::delivery::templates::Topic::Transactional,
        subject: None,
        body: "Your withdrawal is on its way".into(),
    };
    pitboss::delivery::templates::put(&core.db, &marketing, "A", "tpl_core", "default", &template)
        .await
        .unwrap()
        .unwrap();
    let request: SendRequest = serde_json::from_value(
        json!({"channel": "in_app", "player_id": "p_core", "template_id": "tpl_core"}),
    )
    .unwrap();
    let delivery = send(&core, "A", "core_1", request.clone()).await.unwrap();
    assert_eq!(delivery.status, pitboss::store::deliveries::Status::Queued);
    assert_eq!(
        send(&core, "A", "core_1", request).await.unwrap().delivery_id,
        delivery.delivery_id,
        "idempotent"
    );
    let (st, d) = s.get(&t.platform, &format!("/v1/deliveries/{}", delivery.delivery_id)).await;
    assert_eq!(st, 200, "{d}");
}
both!(a_decision_and_a_send_without_http_sqlite_and_postgres, a_decision_and_a_send_without_http);
