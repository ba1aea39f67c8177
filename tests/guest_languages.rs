//! Plugins in Python (componentize-py) and JavaScript (componentize-js) run under the same contract and
//! limits as Rust ones: the same decision tables, their hostile twins stopped, and the same registry
//! lifecycle over HTTP.

use crate::support;

use pitboss::auth::Role;
use pitboss::plugins::table::{Case, run_table};
use pitboss::plugins::{CallOptions, Limits, World};
use serde_json::json;
use support::registry::{approved, manifest, officer};
use support::server::TestServer;

fn table(language: &str, plugin: &str, world: World, table_of: &str) {
    let rt = support::cached_runtime();
    let p = rt.load(&support::guest(language, plugin)).unwrap_or_else(|e| panic!("{language} {plugin}: {e}"));
    assert_eq!(p.world, world);
    let file = support::repo().join("plugins").join(table_of).join("decisions.json");
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let results = run_table(&rt, &p, &cases, Limits::default_for(world));
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{language} {plugin}: {failed:#?}");
}

#[test]
fn python_segment_decides_like_the_rust_one() {
    table("python", "dormant-depositor", World::Segment, "dormant-depositor");
}

#[test]
fn python_churn_risk_decides_like_the_rust_one() {
    table("python", "churn-risk", World::Segment, "churn-risk");
}

#[test]
fn javascript_segment_decides_like_the_rust_one() {
    table("js", "dormant-depositor", World::Segment, "dormant-depositor");
}

#[test]
fn python_offer_scorer_decides_like_the_rust_one() {
    table("python", "next-best-offer", World::OfferScorer, "next-best-offer");
}

#[test]
fn javascript_offer_scorer_decides_like_the_rust_one() {
    table("js", "next-best-offer", World::OfferScorer, "next-best-offer");
}

#[test]
fn python_batch_form_takes_a_chunk_in_one_call() {
    // The world's fuel of one decision, and 5 ms: a chunk of profiles has the fuel and the time of as
    // many decisions, so it is decided in one call, not one by one.
    let rt = support::cached_runtime();
    let p = rt.load(&support::guest("python", "dormant-depositor")).unwrap();
    let limits = Limits { deadline_ms: 5, ..Limits::default_for(World::Segment) };
    let opts = CallOptions { limits, ..CallOptions::new(World::Segment, support::now()) };
    let population: Vec<_> =
        (0..pitboss::plugins::BATCH_CHUNK + 10).map(|i| support::profile(&format!("p_{i}"))).collect();
    let run = rt.segment_batch(&p, &opts, &population);
    let batch = run.outcome.unwrap_or_else(|e| panic!("the batch form: {e}"));
    assert_eq!((batch.len(), run.usage.instances), (population.len(), 2), "two chunks, two calls");
    assert!(run.usage.fuel > limits.fuel, "the whole chunk needed more than one decision's fuel");
    assert!(run.usage.duration_ns > 5_000_000, "and more than one decision's time");
    // Single decisions, with a deadline a loaded machine cannot trip.
    let limits = Limits { deadline_ms: Limits::CEILING.deadline_ms, ..limits };
    let opts = CallOptions { limits, ..opts };
    for (profile, m) in population.iter().zip(&batch).step_by(97) {
        let one = rt.segment(&p, &opts, profile, None).outcome.unwrap();
        assert_eq!((one.member, &one.reason), (m.member, &m.reason), "{}", profile.player_id);
    }
}

fn hostile(language: &str) {
    let rt = support::cached_runtime();
    let good = rt.load(&support::guest(language, "dormant-depositor")).unwrap();
    // Only the limit under test may trip: a loaded machine must not turn these into deadline failures.
    let limits = Limits { deadline_ms: Limits::CEILING.deadline_ms, ..Limits::default_for(World::Segment) };
    let opts = CallOptions { limits, ..CallOptions::new(World::Segment, support::now()) };
    // Zeroing what it allocates costs the memory bomb fuel: give it enough to reach the memory limit.
    let bomb_limits = Limits { fuel: 2_000_000_000, ..limits };
    for (plugin, code, limits) in [
        ("hostile-infinite-loop", "out_of_fuel", limits),
        ("hostile-memory-bomb", "out_of_memory", bomb_limits),
    ] {
        let p = rt.load(&support::guest(language, plugin)).unwrap();
        let opts = CallOptions { limits, ..opts.clone() };
        let run = rt.segment(&p, &opts, &support::profile("victim"), None);
        let err = run.outcome.expect_err(plugin);
        assert_eq!(err.code(), code, "{language} {plugin}: {err}");
        assert!(run.usage.fuel <= limits.fuel && run.usage.peak_memory_bytes <= limits.memory_bytes);
        // The host and the next decision are unharmed.
        assert!(rt.segment(&good, &opts, &support::profile("p"), None).outcome.unwrap().member);
    }
}

#[test]
fn python_hostile_twins_are_stopped_by_the_limits() {
    hostile("python");
}

#[test]
fn javascript_hostile_twins_are_stopped_by_the_limits() {
    hostile("js");
}

async fn python_and_javascript_go_through_the_lifecycle(s: &TestServer) {
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let platform = s.key_of(Role::Platform, &["A"], "PAM").await;
    let carla = officer(s, &admin, "Carla Compliance").await;
    let registration = support::registered("p_de", json!({}));
    assert_eq!(s.post(&platform, "/v1/events", &registration).await.0, 202);
    s.settled().await;
    for (language, version) in [("python", "1.0.0-py"), ("js", "1.0.0-js")] {
        let m = manifest("dormant-depositor", version, "segment", &["DE"]);
        let bytes = support::guest(language, "dormant-depositor");
        let path = s.data_dir.path().join(format!("{language}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let id = approved_guest(s, &operator, &carla, &m, bytes).await;
        let (st, b) = s
            .post(
                &operator,
                "/admin/bindings",
                &json!({"brand_id": "A", "jurisdiction": "DE", "plugin_id": id}),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let (st, d) = s.post(&platform, "/v1/decisions/segment", &json!({"player_id": "p_de"})).await;
        assert_eq!(st, 200, "{language}: {d}");
        assert_eq!(d["plugin"]["version"], json!(version));
        assert_eq!(d["decision"]["reason"], json!("no e-mail consent"), "{language}: {d}");
    }
    let _ = approved; // the Rust-plugin helper; guests bring their own bytes
}

/// Upload + sign + approve for bytes that are not one of the Rust reference plugins.
async fn approved_guest(
    s: &TestServer,
    operator: &str,
    o: &support::registry::Officer,
    m: &serde_json::Value,
    bytes: Vec<u8>,
) -> String {
    let (st, v) = support::registry::upload(s, operator, m, bytes.clone()).await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (st, v) = support::registry::approve(s, o, &id, &support::registry::sign(s, o, m, &bytes)).await;
    assert_eq!(st, 201, "{v}");
    id
}
both!(
    python_and_javascript_go_through_the_lifecycle_sqlite_and_postgres,
    python_and_javascript_go_through_the_lifecycle
);
