//! Triggers and journeys over real HTTP, SMTP and signed push, on SQLite and PostgreSQL: the three
//! shipped examples (`examples/engage/`) end to end, exactly once across a replay of the log, a crash
//! and a second host; a journey left at once on self-exclusion; a sensitive trigger that its author
//! cannot activate; a new journey version that leaves players in flight on theirs.

use crate::support;

use std::time::Duration;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::registry::{approved, manifest, officer};
use support::rig::{FAST, Rig, rig};
use support::server::Backend;

struct Team {
    operator: String,
    compliance: String,
    carla: support::registry::Officer,
    dave: support::registry::Officer,
}

async fn team(r: &Rig) -> Team {
    let s = &r.s;
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    Team {
        operator: s.key_of(Role::Operator, &["A"], "Olga Operator").await,
        compliance: s.key_of(Role::Compliance, &["A"], "Carla Compliance").await,
        carla: officer(s, &admin, "Carla Compliance").await,
        dave: officer(s, &admin, "Dave Compliance").await,
    }
}

/// Uploads, approves (two officers) and binds a segment rule for the brand, in `slot`.
async fn rule(r: &Rig, t: &Team, plugin: &str, slot: &str, config: Value) {
    let m = manifest(plugin, "1.0.0", "segment", &["*"]);
    let id = approved(&r.s, &t.operator, &[&t.carla, &t.dave], plugin, &m).await;
    let body = json!({"brand_id": "A", "jurisdiction": "*", "plugin_id": id, "rule": slot, "config": config});
    let (st, v) = r.s.post(&t.operator, "/admin/bindings", &body).await;
    assert_eq!(st, 201, "{v}");
}

/// Loads a bundle of `examples/engage/` with the CLI, as marketing; what it printed.
async fn load(r: &Rig, bundle: &str) -> Value {
    let file = support::repo().join("examples/engage").join(bundle);
    let (base, key) = (r.s.base.clone(), r.marketing.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitboss"))
            .args(["engage", "load", file.to_str().unwrap(), "--url", &base, "--api-key", &key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn id_of(report: &Value, kind: &str, name: &str) -> String {
    report.as_array().unwrap().iter().find(|i| i[kind] == json!(name)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An event of player `p` at the host's clock less a minute.
fn event(r: &Rig, id: &str, kind: &str, p: &str, payload: Value) -> Value {
    let at = r.s.clock.now() - jiff::SignedDuration::from_mins(1);
    json!({"event_id": id, "event_type": kind, "player_id": p, "brand_id": "A", "occurred_at": at.to_string(),
           "payload": payload})
}

async fn post(r: &Rig, e: Value) {
    let (st, v) = r.s.post(&r.platform, "/v1/events", &e).await;
    assert_eq!(st, 202, "{v}");
}

fn mails_to(r: &Rig, to: &str) -> Vec<support::smtp::Mail> {
    r.smtp.messages().into_iter().filter(|m| m.rcpt_to.iter().any(|a| a == to)).collect()
}

async fn fires(r: &Rig, p: &str) -> Vec<Value> {
    let (st, v) = r.s.get(&r.marketing, &format!("/v1/players/{p}/triggers")).await;
    assert_eq!(st, 200, "{v}");
    v["fires"].as_array().unwrap().clone()
}

/// Waits until the trigger consumer has taken every event in the log.
async fn engaged(r: &Rig) {
    support::eventually("the engage consumer catching up", Duration::from_secs(10), || async {
        (!pitboss::bus::pending(&r.s.db, "engage").await.unwrap()).then_some(())
    })
    .await
}

async fn payment_failed_prompt(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    r.player("p_pay", "GB", "Europe/London").await;
    let report = load(&r, "payment-failed-prompt.json").await;
    let trigger = id_of(&report, "trigger", "payment-failed-prompt");
    // Transactional: active at once, no activation needed.
    assert_eq!(report.as_array().unwrap().last().unwrap()["active_version"], json!(1), "{report}");

    let failed = |id: &str, code: &str, payment: &str| {
        event(
            &r,
            id,
            "payment.failed",
            "p_pay",
            json!({"payment_id": payment, "amount_minor": 5000, "currency": "GBP", "reason_code": code}),
        )
    };
    post(&r, failed("pf1", "3ds_failed", "pay_1")).await;
    let mail = r.smtp.wait_for(1, Duration::from_secs(10)).await;
    assert!(mail[0].body().contains("5000") && mail[0].body().contains("3ds_failed"), "{}", mail[0].body());
    // The same payment failing again within 30 minutes, and a failure that is not a card check.
    post(&r, failed("pf2", "avs_failed", "pay_1")).await;
    post(&r, failed("pf3", "insufficient_funds", "pay_2")).await;
    engaged(&r).await;
    let f = fires(&r, "p_pay").await;
    let outcomes: Vec<&str> = f.iter().map(|f| f["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 2, "{f:?}");
    assert!(outcomes.contains(&"fired") && outcomes.contains(&"deduplicated"), "{f:?}");
    let fired = f.iter().find(|f| f["outcome"] == "fired").unwrap();
    assert_eq!(fired["event_id"], "pf1");
    let delivery = fired["delivery_id"].as_str().unwrap();
    let (_, d) = r.s.get(&r.platform, &format!("/v1/deliveries/{delivery}")).await;
    assert_eq!(d["class"], "transactional", "{d}");

    // A replay of the whole log sends nothing twice.
    let deliveries = r.s.count("SELECT COUNT(*) FROM deliveries").await;
    sqlx::query("UPDATE consumer_offsets SET position = 0, tx_id = 0 WHERE consumer = 'engage'")
        .execute(&r.s.db.pool)
        .await
        .unwrap();
    r.s.post(&r.platform, "/v1/events", &failed("pf4", "insufficient_funds", "pay_3")).await;
    engaged(&r).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.s.count("SELECT COUNT(*) FROM deliveries").await, deliveries);
    assert_eq!(r.smtp.messages().len(), 1);

    let (st, stats) = r.s.get(&r.marketing, &format!("/admin/triggers/{trigger}/stats")).await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!((stats["fired"].as_i64(), stats["deduplicated"].as_i64()), (Some(1), Some(1)), "{stats}");

    // Two failures of another payment in one request, so in one batch of the trigger consumer: the
    // second is deduplicated by the first, fired in the same transaction.
    let twice = json!([failed("pf5", "3ds_failed", "pay_4"), failed("pf6", "avs_failed", "pay_4")]);
    let (st, v) = r.s.post(&r.platform, "/v1/events", &twice).await;
    assert_eq!(st, 202, "{v}");
    engaged(&r).await;
    let f = fires(&r, "p_pay").await;
    let outcome = |id: &str| f.iter().find(|f| f["event_id"] == id).map(|f| f["outcome"].clone());
    assert_eq!(
        (outcome("pf5"), outcome("pf6")),
        (Some(json!("fired")), Some(json!("deduplicated"))),
        "{f:?}"
    );
    r.s.stop().await;
}

async fn big_loss_cashback(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    let t = team(&r).await;
    rule(&r, &t, "big-loss", "big-loss", json!({"loss_minor": "5000"})).await;
    r.player("p_loss", "GB", "Europe/London").await;
    r.player("p_excluded", "GB", "Europe/London").await;
    let report = load(&r, "big-loss-cashback.json").await;
    let trigger = id_of(&report, "trigger", "big-loss-cashback");
    // Marketing: inactive until someone activates it.
    assert_eq!(report.as_array().unwrap().last().unwrap()["active_version"], Value::Null, "{report}");
    let bet = |id: &str, p: &str, stake: i64, win: i64| {
        event(
            &r,
            id,
            "bet.settled",
            p,
            json!({"bet_id": id, "stake_minor": stake, "currency": "GBP", "win_minor": win,
                                           "game_id": "g1", "provider": "studio_x", "category": "slots"}),
        )
    };
    post(&r, bet("b0", "p_loss", 9000, 0)).await;
    engaged(&r).await;
    assert!(fires(&r, "p_loss").await.is_empty(), "an inactive trigger does not fire");

    let (st, v) =
        r.s.post(&r.marketing, &format!("/admin/triggers/{trigger}/activate"), &json!({"version": 1})).await;
    assert_eq!(st, 200, "{v}");
    // A small loss, then a big one, then another big one inside the day's cooldown.
    post(&r, bet("b1", "p_loss", 1000, 200)).await;
    post(&r, bet("b2", "p_loss", 8000, 0)).await;
    post(&r, bet("b3", "p_loss", 7000, 0)).await;
    let mail = r.smtp.wait_for(1, Duration::from_secs(10)).await;
    assert!(mail[0].body().contains("cashback"), "{}", mail[0].body());
    // Only where RG allows: a self-excluded player's loss is suppressed by the gate, with its reason.
    post(
        &r,
        event(
            &r,
            "se1",
            "self_exclusion.started",
            "p_excluded",
            json!({"scope": "operator", "register": "own"}),
        ),
    )
    .await;
    post(&r, bet("b4", "p_excluded", 9000, 0)).await;
    engaged(&r).await;
    let f = fires(&r, "p_loss").await;
    let by_event: std::collections::BTreeMap<&str, &str> =
        f.iter().map(|f| (f["event_id"].as_str().unwrap(), f["outcome"].as_str().unwrap())).collect();
    assert_eq!(by_event, [("b2", "fired"), ("b3", "cooldown")].into(), "{f:?}");
    assert!(
        f.iter().find(|f| f["event_id"] == "b2").unwrap()["decision_seq"].is_i64(),
        "the rule's decision is on record"
    );
    let x = fires(&r, "p_excluded").await;
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(x[0]["outcome"], "suppressed", "{x:?}");
    assert!(x[0]["reason"].as_str().unwrap().contains("self_excluded"), "{x:?}");
    assert_eq!(mails_to(&r, "p_excluded@example.com").len(), 0);
    let (_, stats) = r.s.get(&r.marketing, &format!("/admin/triggers/{trigger}/stats")).await;
    assert_eq!(
        (stats["fired"].as_i64(), stats["suppressed"].as_i64(), stats["cooldown"].as_i64()),
        (Some(1), Some(1), Some(1)),
        "{stats}"
    );

    // The dry run tells the same without writing: a big loss would be in cooldown for p_loss.
    let before = r.s.count("SELECT COUNT(*) FROM trigger_fires").await;
    let dry = json!({"player_id": "p_loss", "events": [bet("dry1", "p_loss", 9000, 0), bet("dry2", "p_loss", 100, 0)]});
    let (st, v) = r.s.post(&t.compliance, &format!("/admin/triggers/{trigger}/dry-run"), &dry).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["events"][0]["outcome"], "cooldown", "{v}");
    assert_eq!(v["events"][1]["outcome"], "not_matched", "{v}");
    assert!(v["events"][1]["reason"].as_str().unwrap().contains("big-loss"), "{v}");
    assert_eq!(r.s.count("SELECT COUNT(*) FROM trigger_fires").await, before);

    // Four eyes: a version worth more than the brand's threshold is sensitive.
    let mut def = serde_json::from_str::<Value>(
        &std::fs::read_to_string(support::repo().join("examples/engage/big-loss-cashback.json")).unwrap(),
    )
    .unwrap()["triggers"][0]
        .clone();
    def["action"]["value_minor"] = json!(50_000);
    let (st, v) = r.s.put(&r.marketing, &format!("/admin/triggers/{trigger}"), &def).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["versions"][0]["sensitive"], json!(true), "{v}");
    assert_eq!(v["active_version"], json!(1), "the active version runs until the new one is activated");
    let activate = json!({"version": 2});
    let (st, v) = r.s.post(&r.marketing, &format!("/admin/triggers/{trigger}/activate"), &activate).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("four_eyes")), "{v}");
    let author_as_officer = r.s.key_of(Role::Compliance, &["A"], "marketing holder").await;
    let (st, _) =
        r.s.post(&author_as_officer, &format!("/admin/triggers/{trigger}/activate"), &activate).await;
    assert_eq!(st, 403, "an officer key of the author's own holder is the author");
    let (st, v) = r.s.post(&t.compliance, &format!("/admin/triggers/{trigger}/activate"), &activate).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["active_version"], json!(2));
    r.s.stop().await;
}

/// A player last seen 20 days ago: churn score above 0.7.
async fn churning_player(r: &Rig, p: &str) {
    r.player(p, "GB", "Europe/London").await;
    let at = r.s.clock.now() - jiff::SignedDuration::from_hours(20 * 24);
    let e = json!({"event_id": format!("{p}_s"), "event_type": "session.started", "player_id": p, "brand_id": "A",
                   "occurred_at": at.to_string(), "payload": {"session_id": format!("{p}_s"), "device": "ios", "country": "GB"}});
    post(r, e).await;
}

async fn journey_of(r: &Rig, p: &str) -> Value {
    let (st, v) = r.s.get(&r.marketing, &format!("/v1/players/{p}/journeys")).await;
    assert_eq!(st, 200, "{v}");
    v["journeys"][0].clone()
}

async fn until_journey(r: &Rig, p: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    support::eventually(what, Duration::from_secs(30), || async {
        let j = journey_of(r, p).await;
        done(&j).then_some(j)
    })
    .await
}

async fn churn_winback(b: Backend) {
    let Some(mut r) = rig(b, FAST).await else { return };
    let t = team(&r).await;
    rule(&r, &t, "churn-risk", "churning", json!({})).await; // the slot of the segment the bundle makes
    let report = load(&r, "churn-winback.json").await;
    let (journey, trigger) =
        (id_of(&report, "journey", "churn-winback"), id_of(&report, "trigger", "churn-winback-entry"));
    for path in [format!("/admin/journeys/{journey}/activate"), format!("/admin/triggers/{trigger}/activate")]
    {
        let (st, v) = r.s.post(&r.marketing, &path, &json!({"version": 1})).await;
        assert_eq!(st, 200, "{v}");
    }
    // Their events (or the sweep) put them in `churning`; segment.entered enters each in the journey; the
    // push goes at once.
    let players = ["p_c1", "p_c2", "p_c3", "p_back", "p_se"];
    for p in players {
        churning_player(&r, p).await;
    }
    let (_, segments) = r.s.get(&r.marketing, "/v1/segments").await;
    let segment = segments["segments"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = r.s.post(&r.marketing, &format!("/admin/segments/{segment}/refresh"), &json!({})).await;
    assert_eq!(st, 202, "{v}");
    for p in players {
        until_journey(&r, p, "the push step", |j| j["next"]["node"] == "email").await;
    }
    let pushes = r.push[0].wait_for(players.len(), Duration::from_secs(30)).await;
    assert_eq!(pushes.len(), players.len());

    // A new version takes new entrants only; players in flight finish version 1.
    let mut def = serde_json::from_str::<Value>(
        &std::fs::read_to_string(support::repo().join("examples/engage/churn-winback.json")).unwrap(),
    )
    .unwrap()["journeys"][0]
        .clone();
    def["nodes"]["wait"]["minutes"] = json!(4320);
    let (st, v) = r.s.put(&r.marketing, &format!("/admin/journeys/{journey}"), &def).await;
    assert_eq!(st, 200, "{v}");
    let (st, _) =
        r.s.post(&r.marketing, &format!("/admin/journeys/{journey}/activate"), &json!({"version": 2})).await;
    assert_eq!(st, 200);

    // One comes back; one self-excludes and leaves at once.
    post(
        &r,
        event(
            &r,
            "back_s",
            "session.started",
            "p_back",
            json!({"session_id": "back_s", "device": "ios", "country": "GB"}),
        ),
    )
    .await;
    post(
        &r,
        event(&r, "se_1", "self_exclusion.started", "p_se", json!({"scope": "operator", "register": "own"})),
    )
    .await;
    let back = until_journey(&r, "p_back", "returning", |j| j["state"] == "completed").await;
    assert_eq!(back["exit_reason"], "returned", "{back}");
    let se = until_journey(&r, "p_se", "self-exclusion", |j| j["state"] == "exited").await;
    assert!(se["exit_reason"].as_str().unwrap().contains("self_excluded"), "{se}");

    // The dry run walks the path without writing: with a session arriving, the player would leave.
    let runs = r.s.count("SELECT COUNT(*) FROM journey_runs").await;
    let dry = |events: Value| json!({"player_id": "p_c1", "version": 1, "events": events});
    let (st, v) =
        r.s.post(&t.compliance, &format!("/admin/journeys/{journey}/dry-run"), &dry(json!([]))).await;
    assert_eq!(st, 200, "{v}");
    let nodes: Vec<&str> = v["steps"].as_array().unwrap().iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(nodes, ["push", "wait", "email", "done"], "{v}");
    let session = event(&r, "dry_s", "session.started", "p_c1", json!({"session_id": "dry_s"}));
    let (_, v) =
        r.s.post(&t.compliance, &format!("/admin/journeys/{journey}/dry-run"), &dry(json!([session]))).await;
    let nodes: Vec<&str> = v["steps"].as_array().unwrap().iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(nodes, ["push", "wait", "returned"], "{v}");
    assert_eq!(r.s.count("SELECT COUNT(*) FROM journey_runs").await, runs, "a dry run writes nothing");

    // Paused, the journey holds its players where they are, even when their wait is over.
    let (st, _) = r.s.post(&r.marketing, &format!("/admin/journeys/{journey}/pause"), &json!({})).await;
    assert_eq!(st, 200);
    // kill -9 while they wait, a second host on the same database, then two days pass.
    r.s.crash().await;
    r.s.start_again().await;
    let (_base, stop2, task2) = r.s.second_host().await;
    r.s.clock.advance(jiff::SignedDuration::from_hours(48) + jiff::SignedDuration::from_mins(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(journey_of(&r, "p_c1").await["next"]["node"], "email", "paused: still waiting");
    assert_eq!(mails_to(&r, "p_c1@example.com").len(), 0);
    let (st, _) = r.s.post(&r.marketing, &format!("/admin/journeys/{journey}/resume"), &json!({})).await;
    assert_eq!(st, 200);
    for p in ["p_c1", "p_c2", "p_c3"] {
        let j = until_journey(&r, p, "the e-mail step", |j| j["state"] == "completed").await;
        assert_eq!(j["version"], json!(1), "{j}");
        assert_eq!(j["exit_reason"], "journey done", "{j}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in ["p_c1", "p_c2", "p_c3"] {
        assert_eq!(mails_to(&r, &format!("{p}@example.com")).len(), 1, "{p}: one e-mail, whatever the hosts");
    }
    assert_eq!(mails_to(&r, "p_back@example.com").len() + mails_to(&r, "p_se@example.com").len(), 0);
    assert_eq!(r.s.count("SELECT COUNT(*) FROM journey_steps WHERE kind = 'send'").await, 8);
    let _ = stop2.send(());
    let _ = task2.await;

    let (st, stats) = r.s.get(&r.marketing, &format!("/admin/journeys/{journey}/stats")).await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(stats["entered"]["1"], json!(5), "{stats}");
    assert_eq!(stats["ended"]["completed: journey done"], json!(3), "{stats}");
    // Erasure forgets the player's runs, steps and fires.
    assert_eq!(r.s.delete(&r.platform, "/v1/players/p_c1").await.0, 200);
    assert_eq!(journey_of(&r, "p_c1").await, Value::Null);
    assert!(fires(&r, "p_c1").await.is_empty());
    assert_eq!(
        r.s.count("SELECT COUNT(*) FROM journey_steps WHERE run_id NOT IN (SELECT id FROM journey_runs)")
            .await,
        0
    );
    r.s.stop().await;
}

/// Definitions are checked when saved, each refusal naming its field; roles are checked first.
async fn definitions_are_checked(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    r.template("tpl_t", "transactional", "Hello").await;
    let analyst = r.s.key(Role::Analyst, &["A"]).await;
    let trigger = |edit: &dyn Fn(&mut Value)| {
        let mut t = json!({"name": "t1", "on": ["payment.failed"],
                           "action": {"type": "send", "template_id": "tpl_t", "channel": "email"}});
        edit(&mut t);
        t
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            trigger(&|t| t["conditions"] = json!([{"fact": "event.nope", "op": "eq", "value": 1}])),
            "conditions",
        ),
        (
            trigger(&|t| t["conditions"] = json!([{"fact": "event.amount_minor", "op": "gt", "value": "x"}])),
            "conditions",
        ),
        (trigger(&|t| t["action"]["template_id"] = json!("missing")), "action.template_id"),
        (trigger(&|t| t["on"] = json!([])), "on"),
        (trigger(&|t| t["name"] = json!("Bad Name")), "name"),
        (trigger(&|t| t["cooldown_minutes"] = json!(10_000_000)), "cooldown_minutes"),
        (trigger(&|t| t["action"] = json!({"type": "journey", "journey": "nope"})), "action.journey"),
        (trigger(&|t| t["action"]["personalization"] = json!({"x": "$event.nope"})), "action"),
    ];
    for (body, field) in cases {
        let (st, v) = r.s.post(&r.marketing, "/admin/triggers", &body).await;
        assert_eq!(
            (st, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (422, Some("invalid_trigger"), Some(field)),
            "{body}: {v}"
        );
    }
    let (st, v) =
        r.s.post(&r.marketing, "/admin/triggers", &trigger(&|t| t["action"]["type"] = json!("offer"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_trigger")), "{v}");
    let (st, _) = r.s.post(&analyst, "/admin/triggers", &trigger(&|_| {})).await;
    assert_eq!(st, 403, "an analyst reads triggers, and does not write them");
    let (st, v) = r.s.post(&r.marketing, "/admin/triggers", &trigger(&|_| {})).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = r.s.post(&r.marketing, "/admin/triggers", &trigger(&|_| {})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("trigger_exists")), "{v}");
    // Transactional is active at once, unless it is sensitive: then it waits for a second person.
    let sensitive = trigger(&|t| {
        t["name"] = json!("t2");
        t["sensitive"] = json!(true);
    });
    let (st, v) = r.s.post(&r.marketing, "/admin/triggers", &sensitive).await;
    assert_eq!((st, v["active_version"].clone()), (201, Value::Null), "{v}");

    let journey = |nodes: Value| json!({"name": "j1", "start": "a", "nodes": nodes});
    let cases = [
        (
            journey(
                json!({"a": {"type": "branch", "cases": [{"conditions": [], "next": "b"}], "default": "b"},
                        "b": {"type": "check", "conditions": [{"fact": "profile.kyc", "op": "exists"}], "then": "a", "else": "a"}}),
            ),
            "nodes",
        ),
        (journey(json!({"a": {"type": "wait", "minutes": 5, "next": "nowhere"}})), "nodes.a"),
        (journey(json!({"a": {"type": "wait", "next": "a"}})), "nodes.a"),
        (
            journey(
                json!({"a": {"type": "wait", "until_event": ["session.started"], "minutes": 5, "next": "a"}}),
            ),
            "nodes.a",
        ),
        (journey(json!({"a": {"type": "wait", "until_local_time": "25:00", "next": "a"}})), "nodes.a"),
        (journey(json!({"a": {"type": "check", "then": "a", "else": "a"}})), "nodes.a"),
        (json!({"name": "j1", "start": "zz", "nodes": {"a": {"type": "exit"}}}), "start"),
    ];
    for (body, field) in cases {
        let (st, v) = r.s.post(&r.marketing, "/admin/journeys", &body).await;
        assert_eq!(
            (st, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (422, Some("invalid_journey"), Some(field)),
            "{body}: {v}"
        );
    }
    let (st, v) = r.s.post(&r.marketing, "/admin/journeys", &journey(json!({"a": {"type": "exit"}}))).await;
    assert_eq!((st, v["active_version"].clone()), (201, Value::Null), "a journey waits for activation: {v}");
    r.s.stop().await;
}

/// Saves `journey` and a trigger that enters players in it on `payment.failed`, and activates both.
async fn entered_on_a_failed_payment(r: &Rig, journey: Value) {
    let (st, j) = r.s.post(&r.marketing, "/admin/journeys", &journey).await;
    assert_eq!(st, 201, "{j}");
    let trigger = json!({"name": format!("{}-entry", journey["name"].as_str().unwrap()), "on": ["payment.failed"],
                         "action": {"type": "journey", "journey": journey["name"]}});
    let (st, t) = r.s.post(&r.marketing, "/admin/triggers", &trigger).await;
    assert_eq!(st, 201, "{t}");
    for path in [
        format!("/admin/journeys/{}/activate", j["id"].as_str().unwrap()),
        format!("/admin/triggers/{}/activate", t["id"].as_str().unwrap()),
    ] {
        assert_eq!(r.s.post(&r.marketing, &path, &json!({"version": 1})).await.0, 200);
    }
}

/// A wait until 09:00 takes each player's own time zone.
async fn a_wait_follows_the_players_time_zone(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    r.player("p_tokyo", "GB", "Asia/Tokyo").await;
    r.player("p_london", "GB", "Europe/London").await;
    let journey = json!({"name": "morning", "start": "w", "nodes": {
        "w": {"type": "wait", "until_local_time": "09:00", "next": "x"}, "x": {"type": "exit"}}});
    entered_on_a_failed_payment(&r, journey).await;
    for p in ["p_tokyo", "p_london"] {
        let payload = json!({"payment_id": format!("{p}_pay"), "amount_minor": 100, "currency": "GBP", "reason_code": "x"});
        post(&r, event(&r, &format!("{p}_pf"), "payment.failed", p, payload)).await;
    }
    let now = r.s.clock.now();
    for (p, zone) in [("p_tokyo", "Asia/Tokyo"), ("p_london", "Europe/London")] {
        let run = until_journey(&r, p, "the wait", |j| j["next"]["node"] == "x").await;
        let due: jiff::Timestamp = run["next"]["due_at"].as_str().unwrap().parse().unwrap();
        let local = due.to_zoned_datetime(jiff::tz::TimeZone::get(zone).unwrap());
        assert_eq!((local.hour(), local.minute()), (9, 0), "{p}: {run}");
        assert!(due > now && due - now <= jiff::SignedDuration::from_hours(24), "{p}: the next 09:00, {due}");
    }
    r.s.stop().await;
}

/// An exit event right behind the event that entered the player, in the same request (so in the same
/// batch of the consumer), still ends the run.
async fn an_exit_event_in_the_entering_batch_ends_the_run(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    r.player("p_1", "GB", "Europe/London").await;
    let journey = json!({"name": "hold", "start": "w", "exit_on": ["payment.captured"], "nodes": {
        "w": {"type": "wait", "minutes": 60, "next": "x"}, "x": {"type": "exit"}}});
    entered_on_a_failed_payment(&r, journey).await;
    let payment =
        |id: &str| json!({"payment_id": id, "amount_minor": 100, "currency": "GBP", "reason_code": "x"});
    let both = json!([
        event(&r, "pf_1", "payment.failed", "p_1", payment("pay_1")),
        event(&r, "pc_1", "payment.captured", "p_1", payment("pay_2")),
    ]);
    post(&r, both).await;
    let run =
        until_journey(&r, "p_1", "the exit", |j| j["state"].is_string() && j["state"] != "active").await;
    assert_eq!(
        (run["state"].as_str(), run["exit_reason"].as_str()),
        (Some("exited"), Some("event: payment.captured")),
        "{run}"
    );
    r.s.stop().await;
}

/// More runs due at once than the scheduler takes in one transaction, and two hosts on the database:
/// each run takes each of its steps once, whichever host took it — one e-mail per player.
async fn a_crowd_due_at_once_is_stepped_once_by_two_hosts(b: Backend) {
    let Some(r) = rig(b, FAST).await else { return };
    let template = json!({"topic": "casino", "subject": "A nudge", "body": "Have a look at what is new."});
    let (st, v) = r.s.put(&r.marketing, "/admin/templates/nudge/default", &template).await;
    assert_eq!(st, 200, "{v}");
    let journey = json!({"name": "nudge", "start": "w", "nodes": {
        "w": {"type": "wait", "minutes": 60, "next": "m"},
        "m": {"type": "send", "message": {"template_id": "nudge", "channel": "email"}, "next": "x"},
        "x": {"type": "exit", "reason": "nudged"}}});
    entered_on_a_failed_payment(&r, journey).await;
    let players: Vec<String> = (0..50).map(|i| format!("p_crowd{i:02}")).collect();
    for p in &players {
        r.player(p, "GB", "Europe/London").await;
    }
    let failed: Vec<Value> = players
        .iter()
        .map(|p| {
            let payload = json!({"payment_id": format!("{p}_pay"), "amount_minor": 100, "currency": "GBP", "reason_code": "x"});
            event(&r, &format!("{p}_pf"), "payment.failed", p, payload)
        })
        .collect();
    post(&r, json!(failed)).await;
    support::eventually("every player waiting", Duration::from_secs(30), || async {
        let waiting =
            r.s.count("SELECT COUNT(*) FROM journey_runs WHERE node = 'm' AND state = 'active'").await;
        (waiting == players.len() as i64).then_some(())
    })
    .await;

    let (_base, stop2, task2) = r.s.second_host().await;
    r.s.clock.advance(jiff::SignedDuration::from_mins(61));
    support::eventually("every run done", Duration::from_secs(60), || async {
        let done = r.s.count("SELECT COUNT(*) FROM journey_runs WHERE state = 'completed'").await;
        (done == players.len() as i64).then_some(())
    })
    .await;
    support::eventually("every e-mail at the relay", Duration::from_secs(30), || async {
        (r.smtp.messages().len() >= players.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &players {
        assert_eq!(mails_to(&r, &format!("{p}@example.com")).len(), 1, "{p}: one e-mail, whatever the hosts");
    }
    assert_eq!(r.s.count("SELECT COUNT(*) FROM journey_steps WHERE kind = 'send'").await, 50);
    assert_eq!(r.s.count("SELECT COUNT(*) FROM journey_steps WHERE kind = 'exit'").await, 50);
    let _ = stop2.send(());
    let _ = task2.await;
    r.s.stop().await;
}

crate::on_both!(
    an_exit_event_in_the_entering_batch_ends_the_run,
    payment_failed_prompt,
    big_loss_cashback,
    churn_winback,
    definitions_are_checked,
    a_wait_follows_the_players_time_zone,
    a_crowd_due_at_once_is_stepped_once_by_two_hosts
);
