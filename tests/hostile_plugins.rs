//! Broken and hostile plugins fail with their own typed error, within their limits, and never harm the
//! host or the decisions running beside them.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pitboss::plugins::{CallOptions, Limits, PluginError, World};

fn segment_error(name: &str, limits: Limits) -> (PluginError, pitboss::plugins::Usage) {
    let rt = support::runtime();
    let p = support::load(&rt, name);
    let mut opts = CallOptions::new(World::Segment, support::now());
    opts.limits = Limits { deadline_ms: Limits::CEILING.deadline_ms, ..limits };
    let run = rt.segment(&p, &opts, &support::profile("p_1"), None);
    (run.outcome.expect_err(name), run.usage)
}

#[test]
fn hostile_plugins_fail_with_their_own_error_while_good_decisions_keep_succeeding() {
    let rt = Arc::new(support::runtime());
    let good = support::load(&rt, "dormant-depositor");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (rt, good, stop, ok) = (rt.clone(), good.clone(), stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let opts = CallOptions::new(World::Segment, support::now());
                let profile = support::profile(&format!("good_{i}"));
                while !stop.load(Ordering::Relaxed) {
                    let run = rt.segment(&good, &opts, &profile, None);
                    assert!(run.outcome.expect("a good decision beside hostile ones").member);
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Each case must trip its own limit, not the wall clock of a loaded machine: only the deadline case
    // has a short deadline.
    let defaults = Limits { deadline_ms: Limits::CEILING.deadline_ms, ..Limits::default_for(World::Segment) };
    let cases: [(&str, Limits, &str); 7] = [
        ("hostile-infinite-loop", defaults, "out_of_fuel"),
        (
            "hostile-infinite-loop",
            Limits { fuel: Limits::CEILING.fuel, deadline_ms: 30, ..defaults },
            "deadline_exceeded",
        ),
        ("hostile-memory-bomb", defaults, "out_of_memory"),
        ("hostile-deep-recursion", defaults, "stack_overflow"),
        ("hostile-trap", defaults, "trap"),
        ("hostile-oversized-output", defaults, "output_too_large"),
        ("hostile-log-flood", defaults, "log_limit"),
    ];
    for (name, limits, code) in cases {
        let p = support::load(&rt, name);
        let mut opts = CallOptions::new(World::Segment, support::now());
        opts.limits = limits;
        for _ in 0..3 {
            let run = rt.segment(&p, &opts, &support::profile("victim"), None);
            let err = run.outcome.expect_err(name);
            assert_eq!(err.code(), code, "{name}: {err}");
            assert!(run.usage.fuel <= limits.fuel, "{name} used {} fuel", run.usage.fuel);
            assert!(run.usage.peak_memory_bytes <= limits.memory_bytes, "{name}");
            assert!(run.usage.log_bytes <= limits.log_bytes + 1024, "{name}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("good decisions never failed");
    }
    assert!(ok.load(Ordering::Relaxed) > 0);
    // The host is intact: the same runtime still decides.
    let after = rt.segment(
        &good,
        &CallOptions::new(World::Segment, support::now()),
        &support::profile("after"),
        None,
    );
    assert!(after.outcome.unwrap().member);
}

#[test]
fn a_panic_is_reported_with_the_guest_message() {
    let (err, _) = segment_error("hostile-trap", Limits::default_for(World::Segment));
    let PluginError::Trap(message) = err else { panic!("{err:?}") };
    assert!(message.contains("rule bug: this plugin always panics"), "{message}");
}

#[test]
fn memory_limit_is_the_one_asked_for() {
    let limits = Limits { memory_bytes: 24 << 20, ..Limits::default_for(World::Segment) };
    let (err, usage) = segment_error("hostile-memory-bomb", limits);
    assert_eq!(err, PluginError::OutOfMemory { limit_bytes: 24 << 20 });
    assert!(usage.peak_memory_bytes <= 24 << 20);
}

#[test]
fn limits_above_the_ceiling_are_clamped() {
    let limits = Limits { fuel: u64::MAX, memory_bytes: u64::MAX, ..Limits::default_for(World::Segment) };
    let (err, usage) = segment_error("hostile-memory-bomb", limits);
    assert_eq!(err, PluginError::OutOfMemory { limit_bytes: Limits::CEILING.memory_bytes });
    assert!(usage.peak_memory_bytes <= Limits::CEILING.memory_bytes);
}

#[test]
fn no_state_survives_from_one_decision_to_the_next() {
    let rt = Arc::new(support::runtime());
    let p = support::load(&rt, "hostile-leaky-state");
    let opts = CallOptions::new(World::Segment, support::now());
    let check = |rt: &pitboss::plugins::Runtime, player: &str| {
        let m = rt.segment(&p, &opts, &support::profile(player), None).outcome.unwrap();
        assert_eq!(m.reason.as_deref(), Some("seen before: []"), "{player} saw another decision");
        assert_eq!(m.score, Some(1.0));
    };
    for i in 0..5 {
        check(&rt, &format!("p_{i}"));
    }
    std::thread::scope(|s| {
        for t in 0..4 {
            let rt = rt.clone();
            let check = &check;
            s.spawn(move || (0..20).for_each(|i| check(&rt, &format!("t{t}_{i}"))));
        }
    });
}

#[test]
fn components_that_are_not_pitboss_plugins_are_refused_with_the_reason() {
    let rt = support::runtime();
    let code = |bytes: &[u8]| rt.load(bytes).unwrap_err().code();
    assert_eq!(code(b"\0asm\x01\0\0\0"), "not_a_component");
    assert_eq!(code(b"definitely not wasm"), "not_a_component");
    assert_eq!(code(&support::wasm("hostile-wrong-world")), "unknown_world");
    assert_eq!(code(&support::wasm("hostile-bad-signature")), "bad_exports");
    assert_eq!(code(&support::wasm("hostile-future-version")), "unsupported_version");
    let err = rt.load(&support::wasm("hostile-sneaky-import")).unwrap_err();
    assert_eq!(err, PluginError::DisallowedImport { import: "evil:net/connect@1.0.0".into() });
    let mut truncated = support::wasm("dormant-depositor");
    truncated.truncate(truncated.len() / 2);
    assert_eq!(code(&truncated), "compile_failed");
}

#[test]
fn a_plugin_called_as_another_world_is_refused() {
    let rt = support::runtime();
    let bonus = support::load(&rt, "wager-progress");
    let run =
        rt.segment(&bonus, &CallOptions::new(World::Segment, support::now()), &support::profile("p"), None);
    assert_eq!(
        run.outcome.unwrap_err(),
        PluginError::WrongWorld { expected: World::Segment, found: World::BonusRule }
    );
    assert_eq!(run.usage.instances, 0);
}

#[test]
fn offers_beyond_the_economy_bounds_are_refused() {
    let rt = support::runtime();
    let p = support::load(&rt, "hostile-greedy-offer");
    let candidates: Vec<pitboss::model::OfferTemplate> = serde_json::from_value(serde_json::json!([
        {"template_id": "cb", "kind": "cashback", "max_percent": 10, "max_cap_minor": 2000, "max_wager_multiplier": 5, "max_validity_hours": 48}
    ]))
    .unwrap();
    let ctx = pitboss::model::OfferContext {
        intent: "reengage".into(),
        channel: pitboss::model::OfferChannel::Email,
        max_cost_minor: Some(1000),
    };
    for (mode, needle) in [
        ("", ""),
        ("over-bounds", "percent 100 above the bound 10"),
        ("invented", "not one of the candidates"),
        ("nan-score", "non-finite score"),
        ("over-budget", "cap_minor (context max_cost_minor) 2000 above the bound 1000"),
    ] {
        let mut opts = CallOptions::new(World::OfferScorer, support::now());
        opts.config = Arc::new([("mode".to_string(), mode.to_string())].into());
        let run = rt.offer_scorer(&p, &opts, &support::profile("p"), &candidates, &ctx);
        if mode.is_empty() {
            assert_eq!(run.outcome.unwrap().len(), 1);
        } else {
            let err = run.outcome.unwrap_err();
            assert_eq!(err.code(), "invalid_output", "{mode}");
            assert!(err.to_string().contains(needle), "{mode}: {err}");
        }
    }
}

#[test]
fn oversized_input_is_refused_before_any_instance_exists() {
    let rt = support::runtime();
    let p = support::load(&rt, "dormant-depositor");
    let mut profile = support::profile("p_big");
    profile.features.fav_providers = vec!["x".repeat(1 << 20); 20];
    let run = rt.segment(&p, &CallOptions::new(World::Segment, support::now()), &profile, None);
    assert_eq!(run.outcome.unwrap_err().code(), "input_too_large");
    assert_eq!(run.usage.instances, 0);
}

/// A plugin stopped by its deadline reports the fuel it burnt, not what was last written down before its
/// loop began: an infinite loop given 5 G of fuel and 50 ms uses millions of instructions (to within one
/// yield interval), and the call takes about its deadline.
#[test]
fn a_plugin_stopped_by_its_deadline_reports_what_it_burnt() {
    let limits =
        Limits { fuel: Limits::CEILING.fuel, deadline_ms: 50, ..Limits::default_for(World::Segment) };
    let rt = support::runtime();
    let p = support::load(&rt, "hostile-infinite-loop");
    let mut opts = CallOptions::new(World::Segment, support::now());
    opts.limits = limits;
    let run = rt.segment(&p, &opts, &support::profile("p_1"), None);
    let (err, usage) = (run.outcome.expect_err("a loop"), run.usage);
    assert_eq!(err.code(), "deadline_exceeded", "{err}");
    assert!(usage.fuel > 5_000_000, "reported {} fuel for a 50 ms loop", usage.fuel);
    assert!(usage.fuel < limits.fuel);
    let ms = usage.duration_ns / 1_000_000;
    assert!((50..1_000).contains(&ms), "stopped after {ms} ms");
}
