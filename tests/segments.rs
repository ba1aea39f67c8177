//! Segments over real HTTP, on SQLite and PostgreSQL: kept current by events (a deposit takes a player
//! out of `dormant-depositors` at once) and by sweeps after the clock moved; a self-exclusion empties
//! every marketing segment of the player at once; one segment with a rule per jurisdiction; a swap of a
//! rule sweeps the segment again; counts equal a recount; `segment.*` events reach the log.

use crate::support;

use std::time::Duration;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::registry::{approved, manifest, officer};
use support::server::TestServer;

struct Team {
    operator: String,
    marketing: String,
    platform: String,
    analyst: String,
    carla: support::registry::Officer,
    dave: support::registry::Officer,
}

async fn team(s: &TestServer) -> Team {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    Team {
        operator: s.key_of(Role::Operator, &["A"], "Olga Operator").await,
        marketing: s.key_of(Role::Marketing, &["A"], "Mia Marketing").await,
        platform: s.key_of(Role::Platform, &["A"], "PAM").await,
        analyst: s.key_of(Role::Analyst, &["A"], "Ana Analyst").await,
        carla: officer(s, &admin, "Carla Compliance").await,
        dave: officer(s, &admin, "Dave Compliance").await,
    }
}

async fn segment(s: &TestServer, t: &Team, name: &str, marketing: bool) -> String {
    let (st, v) =
        s.post(&t.marketing, "/admin/segments", &json!({"name": name, "marketing": marketing})).await;
    assert_eq!(st, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn bind(s: &TestServer, t: &Team, segment: &str, jurisdiction: &str, plugin_id: &str, config: Value) {
    let body = json!({"brand_id": "A", "jurisdiction": jurisdiction, "plugin_id": plugin_id, "segment": segment,
                      "config": config});
    let (st, v) = s.post(&t.operator, "/admin/bindings", &body).await;
    assert_eq!(st, 201, "{v}");
}

/// A player registered on 2026-11-01 with e-mail marketing consent.
async fn player(s: &TestServer, t: &Team, id: &str, jurisdiction: &str) {
    let reg = support::registered(id, json!({"jurisdiction": jurisdiction}));
    assert_eq!(s.post(&t.platform, "/v1/events", &reg).await.0, 202);
    let consents = json!({"channels": {"email": true}, "products": {"casino": true}, "source": "signup"});
    assert_eq!(s.put(&t.platform, &format!("/v1/players/{id}/consents"), &consents).await.0, 200);
    s.settled().await;
}

/// Asks for a sweep and waits for it to end; its figures.
async fn sweep(s: &TestServer, t: &Team, segment: &str) -> Value {
    let (st, v) = s.post(&t.operator, &format!("/admin/segments/{segment}/refresh"), &json!({})).await;
    assert_eq!(st, 202, "{v}");
    let path = format!("/admin/segments/{segment}/sweeps/{}", v["sweep_id"].as_str().unwrap());
    support::eventually("the sweep ending", Duration::from_secs(20), || async {
        let (_, w) = s.get(&t.analyst, &path).await;
        (w["state"] == "done" || w["state"] == "failed").then_some(w)
    })
    .await
}

async fn members(s: &TestServer, t: &Team, segment: &str) -> Vec<String> {
    let (st, v) = s.get(&t.analyst, &format!("/v1/segments/{segment}/members")).await;
    assert_eq!(st, 200, "{v}");
    v["members"].as_array().unwrap().iter().map(|m| m["player_id"].as_str().unwrap().to_string()).collect()
}

async fn wait_members(s: &TestServer, t: &Team, segment: &str, want: &[&str], within: Duration) {
    let want: Vec<String> = want.iter().map(|p| p.to_string()).collect();
    support::eventually(&format!("members of {segment} becoming {want:?}"), within, || async {
        (members(s, t, segment).await == want).then_some(())
    })
    .await
}

fn event(id: &str, event_type: &str, player: &str, at: &str, payload: Value) -> Value {
    json!({"event_id": id, "event_type": event_type, "player_id": player, "brand_id": "A", "occurred_at": at,
           "payload": payload})
}

async fn kept_current_by_events_and_sweeps(s: &TestServer) {
    let t = team(s).await;
    s.clock.set(support::now()); // 2026-11-23: registered 22 days ago, never deposited
    let dormant = segment(s, &t, "dormant-depositors", true).await;
    let winback = segment(s, &t, "winback", true).await;
    let audit = segment(s, &t, "dormant-audit", false).await;
    let m = manifest("dormant-depositor", "1.0.0", "segment", &["DE"]);
    let rule = approved(s, &t.operator, &[&t.carla], "dormant-depositor", &m).await;
    for name in ["dormant-depositors", "winback", "dormant-audit"] {
        bind(s, &t, name, "DE", &rule, json!({})).await;
    }
    player(s, &t, "p_d", "DE").await;
    player(s, &t, "p_e", "DE").await;

    // A sweep finds both (their consent came through the API, with no event; the sweeps the new
    // segment and its binding started may have found them first).
    let w = sweep(s, &t, &dormant).await;
    assert_eq!(w["state"], "done", "{w}");
    assert_eq!(
        (w["figures"]["players"].as_u64(), w["figures"]["members"].as_u64()),
        (Some(2), Some(2)),
        "{w}"
    );
    assert_eq!(members(s, &t, &dormant).await, ["p_d", "p_e"]);
    // The sweep's `segment.entered` events end the log: the consumers that pass over the host's
    // events move their offsets past them all the same, and engage takes them.
    support::eventually("every consumer past the sweep's events", Duration::from_secs(10), || async {
        for consumer in [
            pitboss::profiles::CONSUMER,
            pitboss::segments::CONSUMER,
            pitboss::offers::engine::CONSUMER,
            pitboss::engage::CONSUMER,
        ] {
            if pitboss::bus::pending(&s.db, consumer).await.unwrap() {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (_, mine) = s.get(&t.platform, "/v1/players/p_d/segments").await;
    let d =
        &mine["segments"].as_array().unwrap().iter().find(|m| m["segment"] == "dormant-depositors").unwrap();
    assert_eq!(d["plugin_id"], json!(rule));
    let via = d["via"].as_str().unwrap();
    assert!(via.starts_with("sweep:") || via.starts_with("event:") && d["decision_seq"].is_i64(), "{d}");
    assert_eq!(d["reason"], "no deposit in 30 days, last seen 22 days ago");
    sweep(s, &t, &winback).await;
    sweep(s, &t, &audit).await;

    // A deposit takes p_d out at once, with the decision on record.
    let deposit = event(
        "dep_1",
        "payment.captured",
        "p_d",
        "2026-11-23T11:00:00Z",
        json!({"payment_id": "pay_1", "amount_minor": 2500, "currency": "EUR", "method": "card", "psp": "psp_a"}),
    );
    assert_eq!(s.post(&t.platform, "/v1/events", &deposit).await.0, 202);
    wait_members(s, &t, &dormant, &["p_e"], Duration::from_secs(2)).await;
    let (_, mine) = s.get(&t.platform, "/v1/players/p_d/segments").await;
    let left =
        mine["history"].as_array().unwrap().iter().find(|m| m["segment"] == "dormant-depositors").unwrap();
    assert!(left["left_via"].as_str().unwrap().starts_with("event:"), "{left}");
    assert_eq!(left["left_reason"], "1 deposits in 30 days");
    let seq = left["left_decision_seq"].as_i64().expect("the decision behind the change");
    let (_, decisions) = s.get(&t.operator, "/admin/decisions?player_id=p_d").await;
    let rec = decisions["decisions"].as_array().unwrap().iter().find(|d| d["seq"] == seq).unwrap().clone();
    assert_eq!(
        (rec["plugin_id"].as_str(), rec["output"]["member"].as_bool()),
        (Some(rule.as_str()), Some(false))
    );

    // 45 days on, nothing happened: a sweep takes p_d back.
    s.clock.advance(jiff::SignedDuration::from_hours(45 * 24));
    let w = sweep(s, &t, &dormant).await;
    assert_eq!((w["figures"]["entered"].as_u64(), w["figures"]["left"].as_u64()), (Some(1), Some(0)), "{w}");
    assert_eq!(members(s, &t, &dormant).await, ["p_d", "p_e"]);

    // A self-exclusion empties every marketing segment of p_e at once; the audit segment keeps them.
    let excl = event(
        "x_1",
        "self_exclusion.started",
        "p_e",
        "2026-11-23T11:30:00Z",
        json!({"scope": "operator", "register": "OASIS"}),
    );
    assert_eq!(s.post(&t.platform, "/v1/events", &excl).await.0, 202);
    wait_members(s, &t, &dormant, &["p_d"], Duration::from_secs(2)).await;
    wait_members(s, &t, &winback, &["p_d"], Duration::from_secs(2)).await;
    assert_eq!(members(s, &t, &audit).await, ["p_d", "p_e"]);
    let (_, mine) = s.get(&t.platform, "/v1/players/p_e/segments").await;
    let gone = mine["history"].as_array().unwrap().iter().find(|m| m["segment"] == "winback").unwrap();
    assert!(gone["left_reason"].as_str().unwrap().contains("self_excluded"), "{gone}");

    // The log has every change; counts equal a recount.
    let logged =
        s.count("SELECT COUNT(*) FROM events WHERE event_type IN ('segment.entered', 'segment.left')").await;
    let spans = s.count("SELECT COUNT(*) FROM segment_members").await;
    let closed = s.count("SELECT COUNT(*) FROM segment_members WHERE left_at IS NOT NULL").await;
    assert_eq!(logged, spans + closed);
    let (_, all) = s.get(&t.analyst, "/v1/segments").await;
    for seg in all["segments"].as_array().unwrap() {
        let id = seg["id"].as_str().unwrap();
        assert_eq!(
            seg["members"]["total"].as_u64().unwrap() as usize,
            members(s, &t, id).await.len(),
            "{seg}"
        );
    }
    // An erased player is in no segment, and nothing of them is kept there.
    assert_eq!(s.delete(&t.platform, "/v1/players/p_d").await.0, 200);
    assert_eq!(members(s, &t, &audit).await, ["p_e"]);
    assert_eq!(s.count("SELECT COUNT(*) FROM segment_members WHERE player_id = 'p_d'").await, 0);
    // The events the host emits are not the platform's to post.
    let forged = event("f_1", "segment.entered", "p_d", "2026-11-23T11:00:00Z", json!({}));
    let (st, v) = s.post(&t.platform, "/v1/events", &forged).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("event_type")), "{v}");
}
both!(kept_current_by_events_and_sweeps, kept_current_by_events_and_sweeps);

async fn a_rule_per_jurisdiction_and_a_swap(s: &TestServer) {
    let t = team(s).await;
    s.clock.set(jiff::Timestamp::from_second(support::now().as_second() + 30 * 86_400).unwrap());
    let churning = segment(s, &t, "churning", true).await;
    let m = manifest("churn-risk", "1.0.0", "segment", &["*"]);
    let rule = approved(s, &t.operator, &[&t.carla, &t.dave], "churn-risk", &m).await;
    bind(s, &t, "churning", "*", &rule, json!({})).await;
    // GB players of the same segment follow a stricter threshold.
    bind(s, &t, "churning", "GB", &rule, json!({"threshold": "0.999"})).await;
    player(s, &t, "p_de", "DE").await;
    player(s, &t, "p_gb", "GB").await;
    let w = sweep(s, &t, &churning).await;
    assert_eq!(w["state"], "done", "{w}");
    assert_eq!(members(s, &t, &churning).await, ["p_de"]);
    let (_, v) = s.get(&t.analyst, &format!("/v1/segments/{churning}")).await;
    assert_eq!(v["members"]["by_jurisdiction"], json!({"DE": 1}), "{v}");

    // Binding GB to the brand's threshold sweeps the segment on its own.
    let (_, before) = s.get(&t.analyst, &format!("/admin/segments/{churning}/sweeps")).await;
    bind(s, &t, "churning", "GB", &rule, json!({"threshold": "0.5"})).await;
    wait_members(s, &t, &churning, &["p_de", "p_gb"], Duration::from_secs(10)).await;
    let (_, after) = s.get(&t.analyst, &format!("/admin/segments/{churning}/sweeps")).await;
    assert!(after["sweeps"].as_array().unwrap().len() > before["sweeps"].as_array().unwrap().len());
    assert!(after["sweeps"].as_array().unwrap().iter().any(|w| w["cause"] == "binding"), "{after}");
    let (_, v) = s.get(&t.analyst, &format!("/v1/segments/{churning}")).await;
    assert_eq!(v["members"]["by_jurisdiction"], json!({"DE": 1, "GB": 1}), "{v}");

    // And back: a sweep takes the GB player out again, saying why, with the change in the log.
    bind(s, &t, "churning", "GB", &rule, json!({"threshold": "0.999"})).await;
    wait_members(s, &t, &churning, &["p_de"], Duration::from_secs(10)).await;
    let (_, mine) = s.get(&t.platform, "/v1/players/p_gb/segments").await;
    let left = &mine["history"][0];
    assert!(left["left_via"].as_str().unwrap().starts_with("sweep:"), "{left}");
    assert!(left["left_reason"].as_str().unwrap().contains("not above 0.999"), "{left}");
    let logged =
        s.count("SELECT COUNT(*) FROM events WHERE event_type IN ('segment.entered', 'segment.left')").await;
    let spans = s.count("SELECT COUNT(*) FROM segment_members").await;
    let closed = s.count("SELECT COUNT(*) FROM segment_members WHERE left_at IS NOT NULL").await;
    assert_eq!(logged, spans + closed);
    bind(s, &t, "churning", "GB", &rule, json!({"threshold": "0.5"})).await;
    wait_members(s, &t, &churning, &["p_de", "p_gb"], Duration::from_secs(10)).await;

    // CSV for analysts, cursor pages.
    let r = s
        .http
        .get(format!("{}/v1/segments/{churning}/members?format=csv&limit=1", s.base))
        .bearer_auth(&t.analyst)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-next-cursor"], "p_de");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("player_id,jurisdiction,") && text.contains("\np_de,DE,"), "{text}");
    let (_, next) = s.get(&t.analyst, &format!("/v1/segments/{churning}/members?cursor=p_de")).await;
    assert_eq!(next["members"][0]["player_id"], "p_gb");
    // The same from a terminal.
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pitboss")).args(args).output().unwrap()
        })
    };
    let remote = |key: &str| vec!["--url".to_string(), s.base.clone(), "--api-key".into(), key.to_string()];
    let out = cli([vec!["segment".into(), "list".into()], remote(&t.analyst)].concat()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["segments"][0]["members"]["total"], 2, "{listed}");
    let args = [
        vec!["segment".into(), "members".into(), "--id".into(), churning.clone(), "--csv".into()],
        remote(&t.analyst),
    ];
    let out = cli(args.concat()).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\np_gb,GB,"));
    // Wrong role, other brand, bad input.
    assert_eq!(s.post(&t.analyst, "/admin/segments", &json!({"name": "x"})).await.0, 403);
    let other = s.key(Role::Marketing, &["B"]).await;
    assert_eq!(s.get(&other, &format!("/v1/segments/{churning}")).await.0, 404);
    let (st, v) = s.post(&t.marketing, "/admin/segments", &json!({"name": "churning"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("segment_exists")));
    let (st, v) = s.post(&t.marketing, "/admin/segments", &json!({"name": "x", "sweep_minutes": 1})).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("sweep_minutes")));
}
both!(a_rule_per_jurisdiction_and_a_swap, a_rule_per_jurisdiction_and_a_swap);

/// Sweeps and impact reports read the population in pages, several at once: every player comes
/// exactly once, in id order, each page covering the ids after the one before; a page holding only
/// erased players' pseudonyms (left out) does not end the read.
async fn a_population_is_read_page_after_page(s: &TestServer) {
    let ids: Vec<String> = (0..11).map(|i| format!("p_{i:02}")).collect();
    // Pseudonyms sort before the players: the first page of three holds only them.
    let erased = (0..3).map(|i| format!("erased_{i}"));
    for (i, id) in ids.iter().cloned().chain(erased).enumerate() {
        sqlx::query(
            "INSERT INTO profiles (brand_id, player_id, state, updated_seq) VALUES ('A', $1, $2, $3)",
        )
        .bind(id)
        .bind(r#"{"jurisdiction": "DE", "time_zone": "Europe/Berlin"}"#)
        .bind(i as i64)
        .execute(&s.db.pool)
        .await
        .unwrap();
    }
    let key = pitboss::store::contacts::ContactsKey::generate().0;
    let mut pages = pitboss::profiles::Population::read(s.db.clone(), key, "A".into(), 3, |page| {
        let players: Vec<String> = page.profiles.into_iter().map(|(p, _)| p).collect();
        (page.after, page.last, players)
    });
    let (mut read, mut previous, mut empty) = (Vec::new(), String::new(), 0);
    while let Some((after, last, players)) = pages.next().await.unwrap() {
        assert_eq!(after, previous, "pages follow each other");
        assert!(players.iter().all(|p| *p > after && *p <= last), "{after}..{last}: {players:?}");
        empty += usize::from(players.is_empty());
        read.extend(players);
        previous = last;
    }
    assert_eq!(read, ids);
    assert_eq!(empty, 1, "the page of pseudonyms");
}
both!(a_population_is_read_page_after_page, a_population_is_read_page_after_page);

/// The consumer decides a batch's players together; a rule that traps for one of them (NL's) fails
/// that decision alone: recorded with its outcome, membership unchanged, the others decided.
async fn a_trap_in_a_batch_fails_alone(s: &TestServer) {
    let t = team(s).await;
    s.clock.set(jiff::Timestamp::from_second(support::now().as_second() + 30 * 86_400).unwrap());
    let churning = segment(s, &t, "churning", false).await;
    let m = manifest("churn-risk", "1.0.0", "segment", &["*"]);
    let rule = approved(s, &t.operator, &[&t.carla, &t.dave], "churn-risk", &m).await;
    bind(s, &t, "churning", "*", &rule, json!({})).await;
    let m = manifest("nl-trap", "1.0.0", "segment", &["NL"]);
    let trap = approved(s, &t.operator, &[&t.carla, &t.dave], "hostile-trap", &m).await;
    bind(s, &t, "churning", "NL", &trap, json!({})).await;
    let batch: Vec<Value> = [("p_de", "DE"), ("p_nl", "NL"), ("p_gb", "GB")]
        .iter()
        .map(|(p, j)| support::registered(p, json!({"jurisdiction": j})))
        .collect();
    assert_eq!(s.post(&t.platform, "/v1/events", &Value::Array(batch)).await.0, 202);
    wait_members(s, &t, &churning, &["p_de", "p_gb"], Duration::from_secs(10)).await;
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT player_id, outcome FROM decisions WHERE world = 'segment' ORDER BY player_id")
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    let nl: Vec<&str> = outcomes.iter().filter(|(p, _)| p == "p_nl").map(|(_, o)| o.as_str()).collect();
    assert!(!nl.is_empty() && nl.iter().all(|o| *o == "trap"), "{outcomes:?}");
    assert!(outcomes.iter().filter(|(p, _)| p != "p_nl").all(|(_, o)| o == "ok"), "{outcomes:?}");
}
both!(a_trap_in_a_batch_fails_alone, a_trap_in_a_batch_fails_alone);

/// Asks for a candidate's impact report on `segment` and waits for it; the report as served.
async fn impact(s: &TestServer, key: &str, plugin_id: &str, segment: &str) -> Value {
    let path = format!("/admin/plugins/{plugin_id}/impact");
    let (st, v) = s.post(key, &path, &json!({"segment": segment})).await;
    assert_eq!(st, 202, "{v}");
    support::eventually("the impact report", Duration::from_secs(30), || async {
        let (_, r) = s.get(key, &path).await;
        (r["state"] != "running").then_some(r)
    })
    .await
}

async fn impact_reports_are_signed_with_the_approval(s: &mut TestServer) {
    let t = team(s).await;
    s.clock.set(support::now());
    segment(s, &t, "dormant-depositors", true).await;
    let m = manifest("dormant-depositor", "1.0.0", "segment", &["DE"]);
    let rule = approved(s, &t.operator, &[&t.carla], "dormant-depositor", &m).await;
    bind(s, &t, "dormant-depositors", "DE", &rule, json!({})).await;
    player(s, &t, "p_in", "DE").await; // dormant, e-mail consent: in under both
    let reg = support::registered("p_noconsent", json!({}));
    assert_eq!(s.post(&t.platform, "/v1/events", &reg).await.0, 202); // out today: no e-mail consent
    player(s, &t, "p_self", "DE").await;
    let excl = event(
        "x_9",
        "self_exclusion.started",
        "p_self",
        "2026-11-23T10:00:00Z",
        json!({"scope": "operator", "register": "OASIS"}),
    );
    assert_eq!(s.post(&t.platform, "/v1/events", &excl).await.0, 202);
    s.settled().await;

    // A candidate that widens the segment: churn-risk has no consent condition.
    let cm = manifest("dormant-depositor", "2.0.0", "segment", &["DE"]);
    let bytes = support::wasm("churn-risk");
    let (st, v) = support::registry::upload(s, &t.operator, &cm, bytes.clone()).await;
    assert_eq!(st, 201, "{v}");
    let candidate = v["id"].as_str().unwrap().to_string();
    let r = impact(s, &t.carla.api_key, &candidate, "dormant-depositors").await;
    assert_eq!(r["state"], "done", "{r}");
    let report = &r["report"];
    assert_eq!((report["population"].as_u64(), report["host_out"].as_u64()), (Some(3), Some(1)), "{report}");
    assert_eq!(report["gained"]["total"], 1, "{report}");
    assert_eq!(report["gained"]["by_jurisdiction"], json!({"DE": 1}));
    let g = &report["gained"]["sample"][0];
    assert_eq!(
        (g["player_id"].as_str(), g["current"]["member"].as_bool()),
        (Some("p_noconsent"), Some(false)),
        "{g}"
    );
    assert_eq!(g["current"]["reason"], "no e-mail consent");
    assert_eq!(g["candidate"]["member"], true);
    assert_eq!(report["lost"]["total"], 0);
    assert_eq!(report["members"], json!({"current": 1, "candidate": 2}));
    let fuel = &report["limits"]["fuel"];
    assert!(fuel["p50"].as_u64().unwrap() > 0 && fuel["max"].as_u64() <= fuel["limit"].as_u64(), "{fuel}");
    assert_eq!(r["sha256"].as_str(), Some(pitboss::impact::sha256_of(report).as_str()));
    let (_, version) = s.get(&t.operator, &format!("/admin/plugins/{candidate}")).await;
    assert_eq!(version["impact"]["sha256"], r["sha256"]);

    // Signed without the report: refused. With it: approved, and the approval says which report.
    let (st, v) = support::registry::approve(
        s,
        &t.carla,
        &candidate,
        &support::registry::sign(s, &t.carla, &cm, &bytes),
    )
    .await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("bad_signature")), "{v}");
    let sig = support::registry::sign_with(s, &t.carla, &cm, &bytes, Some(&r));
    let (st, v) = support::registry::approve(s, &t.carla, &candidate, &sig).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["approvals"][0]["impact_sha256"], r["sha256"]);
    // An approved version keeps the report it was approved with.
    let (st, _) = s
        .post(
            &t.carla.api_key,
            &format!("/admin/plugins/{candidate}/impact"),
            &json!({"segment": "dormant-depositors"}),
        )
        .await;
    assert_eq!(st, 409);
    // Bound, it runs: the approval verifies at load with its report.
    bind(s, &t, "dormant-depositors", "DE", &candidate, json!({})).await;
    let seg = segment_id(s, &t, "dormant-depositors").await;
    wait_members(s, &t, &seg, &["p_in", "p_noconsent"], Duration::from_secs(10)).await;

    // A hostile candidate: every decision runs out of fuel; counted, the host unaffected.
    let hm = manifest("dormant-depositor", "3.0.0", "segment", &["DE"]);
    let (_, v) = support::registry::upload(s, &t.operator, &hm, support::wasm("hostile-infinite-loop")).await;
    let hostile = v["id"].as_str().unwrap().to_string();
    let r = impact(s, &t.carla.api_key, &hostile, "dormant-depositors").await;
    let f = &r["report"]["failures"]["candidate"];
    assert_eq!((f["players"].as_u64(), f["by_code"]["out_of_fuel"].as_u64()), (Some(2), Some(2)), "{r}");
    assert_eq!(f["sample"].as_array().unwrap().len(), 2);
    assert_eq!(
        r["report"]["members"],
        json!({"current": 2, "candidate": 2}),
        "failed decisions change nothing"
    );
    assert_eq!(s.get(&t.analyst, &format!("/v1/segments/{seg}")).await.0, 200);

    // A host run with `--require-impact NL`: NL versions need a report before anyone may approve them.
    // A report altered in the database unties the approvals that signed it: the version fails closed.
    sqlx::query("UPDATE impact_reports SET sha256 = 'a1tered' WHERE plugin_id = $1")
        .bind(&candidate)
        .execute(&s.db.pool)
        .await
        .unwrap();
    s.require_impact = vec!["NL".into()];
    s.restart().await;
    let ask = json!({"player_id": "p_in", "segment": "dormant-depositors"});
    let (st, v) = s.post(&t.platform, "/v1/decisions/segment", &ask).await;
    assert_eq!((st, v["error"]["code"].as_str()), (503, Some("integrity_failed")), "{v}");
    let nm = manifest("nl-rule", "1.0.0", "segment", &["NL"]);
    let nl_bytes = support::wasm("hostile-trap");
    let (_, v) = support::registry::upload(s, &t.operator, &nm, nl_bytes.clone()).await;
    let nl = v["id"].as_str().unwrap().to_string();
    let (st, v) =
        support::registry::approve(s, &t.carla, &nl, &support::registry::sign(s, &t.carla, &nm, &nl_bytes))
            .await;
    assert_eq!(st, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("impact report"), "{v}");
    // A bonus rule's window is bounded.
    let bm = manifest("wp", "1.0.0", "bonus-rule", &["DE"]);
    let (_, v) = support::registry::upload(s, &t.operator, &bm, support::wasm("wager-progress")).await;
    let (st, v) = s
        .post(
            &t.carla.api_key,
            &format!("/admin/plugins/{}/impact", v["id"].as_str().unwrap()),
            &json!({"days": 365}),
        )
        .await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("days")), "{v}");
}
mod impact_reports_are_signed_with_the_approval {
    use crate::support::server::{Backend, TestServer};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(mut s) = TestServer::start(Backend::Sqlite).await {
            super::impact_reports_are_signed_with_the_approval(&mut s).await;
            s.stop().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(mut s) = TestServer::start(Backend::Postgres).await {
            super::impact_reports_are_signed_with_the_approval(&mut s).await;
            s.stop().await;
        }
    }
}

async fn segment_id(s: &TestServer, t: &Team, name: &str) -> String {
    let (_, all) = s.get(&t.analyst, "/v1/segments").await;
    all["segments"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}
