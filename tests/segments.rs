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
