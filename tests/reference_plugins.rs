//! Each reference plugin against its decision table (`plugins/<name>/decisions.json`), in the real runtime.

use crate::support;

use pitboss::plugins::table::{Case, run_table};
use pitboss::plugins::{Limits, World};

fn table(plugin: &str, world: World) {
    let rt = support::runtime();
    let p = support::load(&rt, plugin);
    assert_eq!(p.world, world);
    let file = support::repo().join("plugins").join(plugin).join("decisions.json");
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(cases.len() >= 4, "{plugin}: a table of a few cases at least");
    let results = run_table(&rt, &p, &cases, Limits::default_for(world));
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{plugin}: {failed:#?}");
}

#[test]
fn dormant_depositor_decides_as_its_table_says() {
    table("dormant-depositor", World::Segment);
}

#[test]
fn churn_risk_decides_as_its_table_says() {
    table("churn-risk", World::Segment);
}

/// The batch form lowers profiles lent from the host's model, the single form copies them: over a
/// table's profiles (without their events), both decide the same for every one, in order.
fn batch_matches_single(plugin: &str) {
    let rt = support::runtime();
    let p = support::load(&rt, plugin);
    let file = support::repo().join("plugins").join(plugin).join("decisions.json");
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let profiles: Vec<pitboss::model::Profile> =
        cases.iter().filter_map(|c| c.input.profile.clone()).collect();
    assert!(profiles.len() >= 4);
    let opts = pitboss::plugins::CallOptions::new(World::Segment, support::now());
    let batch = rt.segment_batch(&p, &opts, &profiles).outcome.unwrap();
    let single: Vec<_> = profiles.iter().map(|x| rt.segment(&p, &opts, x, None).outcome.unwrap()).collect();
    assert_eq!(batch, single, "{plugin}");
}

#[test]
fn the_batch_form_decides_like_the_single_form() {
    batch_matches_single("dormant-depositor");
    batch_matches_single("churn-risk");
}

#[test]
fn wager_progress_decides_as_its_table_says() {
    table("wager-progress", World::BonusRule);
}

#[test]
fn next_best_offer_decides_as_its_table_says() {
    table("next-best-offer", World::OfferScorer);
}

#[test]
fn next_best_offer_uk_variant_decides_as_its_table_says() {
    table("next-best-offer-uk", World::OfferScorer);
}

#[test]
fn a_wrong_expectation_fails_the_table() {
    let rt = support::runtime();
    let p = support::load(&rt, "dormant-depositor");
    let file = support::repo().join("plugins/dormant-depositor/decisions.json");
    let mut cases: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    cases[0]["expect"]["member"] = serde_json::json!(false);
    let cases: Vec<Case> = serde_json::from_value(serde_json::Value::Array(cases)).unwrap();
    let results = run_table(&rt, &p, &cases, Limits::default_for(World::Segment));
    assert!(!results[0].passed);
    assert!(results[0].mismatch.as_deref().unwrap().contains("decision.member: expected false, got true"));
    assert!(results[1..].iter().all(|r| r.passed));
}

#[test]
fn uk_variant_never_proposes_more_than_10x_wagering() {
    let rt = support::runtime();
    let uk = support::load(&rt, "next-best-offer-uk");
    let default = support::load(&rt, "next-best-offer");
    assert_ne!(uk.digest, default.digest, "the two variants are distinct versions");
    let candidates: Vec<pitboss::model::OfferTemplate> = serde_json::from_value(serde_json::json!([
        {"template_id": "dm", "kind": "deposit_match", "max_percent": 100, "max_cap_minor": 10000, "max_wager_multiplier": 35, "max_validity_hours": 168},
        {"template_id": "fs", "kind": "free_spins", "max_cap_minor": 1000, "max_wager_multiplier": 40, "max_validity_hours": 72, "max_spins": 20},
        {"template_id": "cb", "kind": "cashback", "max_percent": 10, "max_cap_minor": 2000, "max_wager_multiplier": 5, "max_validity_hours": 48}
    ]))
    .unwrap();
    let ctx = pitboss::model::OfferContext {
        intent: "reengage".into(),
        channel: pitboss::model::OfferChannel::Email,
        max_cost_minor: None,
    };
    let opts = pitboss::plugins::CallOptions::new(World::OfferScorer, support::now());
    for churn in [0.0, 0.5, 0.95] {
        let mut profile = support::profile("p_uk");
        profile.jurisdiction = "GB".into();
        profile.features.churn_score = churn;
        let uk_offers = rt.offer_scorer(&uk, &opts, &profile, &candidates, &ctx).outcome.unwrap();
        assert_eq!(uk_offers.len(), 3);
        assert!(uk_offers.iter().all(|o| o.params.wager_multiplier <= 10), "{uk_offers:?}");
        let default_offers = rt.offer_scorer(&default, &opts, &profile, &candidates, &ctx).outcome.unwrap();
        assert!(default_offers.iter().any(|o| o.params.wager_multiplier > 10));
    }
}

#[test]
fn big_loss_decides_as_its_table_says() {
    table("big-loss", World::Segment);
}
