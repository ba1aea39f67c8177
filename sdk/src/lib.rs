#![deny(missing_docs)]
//! # Pitboss plugin SDK
//!
//! Write a Pitboss rule plugin in Rust: a segment rule, a bonus rule or an offer scorer, compiled to a
//! WebAssembly component that the Pitboss host runs sandboxed (fuel, memory and time limits, nothing but
//! the profile, the event and its own configuration to look at).
//!
//! A plugin is a `cdylib` crate that depends on `pitboss-sdk`, implements one trait — [`SegmentRule`],
//! [`BonusRule`] or [`OfferScorer`] — and exports it with the matching macro. Build it with
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! and try it locally with `pitboss plugin run --wasm target/wasm32-wasip2/release/my_rule.wasm
//! --world segment --input input.json` before uploading it.
//!
//! ## A segment rule
//!
//! The reference article's dormant depositor: German players with an e-mail opt-in who have not deposited
//! in 30 days and were last seen more than a week ago.
//!
//! ```
//! use pitboss_sdk::prelude::*;
//!
//! struct DormantDepositor;
//!
//! impl SegmentRule for DormantDepositor {
//!     fn evaluate(p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
//!         let f = &p.features;
//!         if p.jurisdiction != "DE" {
//!             return Ok(Membership::out("not in DE"));
//!         }
//!         if !p.consents.channels.contains(ChannelConsents::EMAIL) {
//!             return Ok(Membership::out("no e-mail consent"));
//!         }
//!         if f.dep_count_30d == 0 && f.days_since_last_seen > 7 {
//!             Ok(Membership::member(format!("no deposit in 30 days, last seen {} days ago", f.days_since_last_seen)))
//!         } else {
//!             Ok(Membership::out("recently active"))
//!         }
//!     }
//! }
//!
//! pitboss_sdk::export_segment!(DormantDepositor);
//! # fn main() {}
//! ```
//!
//! [`SegmentRule::evaluate_batch`] has a default that calls `evaluate` for each profile; override it only
//! to share work across a population.
//!
//! ## A bonus rule
//!
//! Counts bets towards the wagering of the player's active bonuses, slots fully and table games at 10%.
//!
//! ```
//! use pitboss_sdk::prelude::*;
//!
//! struct Wagering;
//!
//! impl BonusRule for Wagering {
//!     fn evaluate(event: Event, _p: Profile, bonuses: Vec<BonusState>) -> Result<Vec<BonusAction>, RuleError> {
//!         let EventPayload::Bet(bet) = event.payload else { return Ok(vec![]) };
//!         if event.event_type != EventType::BetSettled {
//!             return Ok(vec![]);
//!         }
//!         let percent = if bet.category == "slots" { 100 } else { 10 };
//!         Ok(bonuses
//!             .into_iter()
//!             .filter(|b| b.status == BonusStatus::Active)
//!             .map(|b| BonusAction::Progress(Progress {
//!                 bonus_id: b.bonus_id,
//!                 contribution_minor: bet.stake.amount_minor * percent as i64 / 100,
//!                 contribution_percent: percent,
//!                 category: bet.category.clone(),
//!             }))
//!             .collect())
//!     }
//! }
//!
//! pitboss_sdk::export_bonus_rule!(Wagering);
//! # fn main() {}
//! ```
//!
//! ## An offer scorer
//!
//! Proposes every candidate at its bounds, cashback first for players at risk of churning; the
//! multiplier comes from the binding's configuration.
//!
//! ```
//! use pitboss_sdk::prelude::*;
//!
//! struct Simple;
//!
//! impl OfferScorer for Simple {
//!     fn score(p: Profile, candidates: Vec<OfferTemplate>, _ctx: OfferContext) -> Result<Vec<RankedOffer>, RuleError> {
//!         let max_wager: u32 = config("max_wager_multiplier").and_then(|v| v.parse().ok()).unwrap_or(35);
//!         let mut offers: Vec<RankedOffer> = candidates
//!             .into_iter()
//!             .map(|t| {
//!                 let boost = if t.kind == OfferKind::Cashback { p.features.churn_score } else { 0.0 };
//!                 RankedOffer {
//!                     score: 0.5 + boost,
//!                     params: OfferParams {
//!                         percent: t.max_percent,
//!                         cap_minor: t.max_cap_minor,
//!                         wager_multiplier: t.max_wager_multiplier.min(max_wager),
//!                         validity_hours: t.max_validity_hours,
//!                         spins: t.max_spins,
//!                     },
//!                     reason: format!("churn score {:.2}", p.features.churn_score),
//!                     template_id: t.template_id,
//!                 }
//!             })
//!             .collect();
//!         offers.sort_by(|a, b| b.score.total_cmp(&a.score));
//!         log(Level::Info, &format!("{} offers", offers.len()));
//!         Ok(offers)
//!     }
//! }
//!
//! pitboss_sdk::export_offer_scorer!(Simple);
//! # fn main() {}
//! ```
//!
//! ## Memory
//!
//! A plugin built with the SDK allocates small blocks (up to 2 KiB) from free lists by size class
//! rather than with the standard allocator: the host's batch form hands a plugin thousands of profiles
//! at once, each string and list its own allocation, and that is most of what a simple rule costs.
//! To use another allocator, depend on the SDK with `default-features = false` (feature `allocator`)
//! and declare your own `#[global_allocator]`.

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(any(test, all(target_family = "wasm", not(target_feature = "atomics"))))]
mod alloc;

#[cfg(all(feature = "allocator", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "pitboss:rules/host-api@0.1.0",
    });
}

/// The shared WIT types: profile, event, money, decisions.
pub use bindings::pitboss::rules::types;

/// The host interfaces a plugin may call (prefer the wrappers [`log`], [`now`], [`config`]).
pub mod host {
    pub use crate::bindings::pitboss::rules::{clock, config, log};
}

include!(concat!(env!("OUT_DIR"), "/generate.rs"));

pub use host::log::Level;
use types::{
    BonusAction, BonusState, Event, Membership, OfferContext, OfferTemplate, Profile, RankedOffer, RuleError,
};

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::types::*;
    pub use crate::{BonusRule, Level, OfferScorer, SegmentRule, config, log, log_with, now};
}

/// A segment rule: is this player in the segment?
pub trait SegmentRule {
    /// Decides for one profile, and the event that triggered the evaluation if any.
    fn evaluate(profile: Profile, event: Option<Event>) -> Result<Membership, RuleError>;

    /// Decides for a population: one membership per profile, in order. Defaults to `evaluate` on each.
    fn evaluate_batch(profiles: Vec<Profile>) -> Result<Vec<Membership>, RuleError> {
        profiles.into_iter().map(|p| Self::evaluate(p, None)).collect()
    }
}

/// A bonus rule: what happens to the player's bonuses on an event.
pub trait BonusRule {
    /// `bonuses` are the player's active bonuses.
    fn evaluate(
        event: Event,
        profile: Profile,
        bonuses: Vec<BonusState>,
    ) -> Result<Vec<BonusAction>, RuleError>;
}

/// An offer scorer: which offers to make, best first, with parameters within each template's bounds.
pub trait OfferScorer {
    /// Ranks `candidates` for this player; leave out what should not be offered.
    fn score(
        profile: Profile,
        candidates: Vec<OfferTemplate>,
        context: OfferContext,
    ) -> Result<Vec<RankedOffer>, RuleError>;
}

impl Membership {
    /// In the segment, with a reason.
    pub fn member(reason: impl Into<String>) -> Self {
        Membership { member: true, score: None, reason: Some(reason.into()) }
    }

    /// Not in the segment, with a reason.
    pub fn out(reason: impl Into<String>) -> Self {
        Membership { member: false, score: None, reason: Some(reason.into()) }
    }

    /// The same decision with a score.
    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score);
        self
    }
}

/// Writes a log entry kept with the decision (the host bounds the bytes a decision may log).
pub fn log(level: Level, message: &str) {
    host::log::write(level, message, &[]);
}

/// Writes a log entry with key/value fields.
pub fn log_with(level: Level, message: &str, fields: &[(String, String)]) {
    host::log::write(level, message, fields);
}

/// The decision's time, in milliseconds since the Unix epoch (not the wall clock: replays see the same).
pub fn now() -> i64 {
    host::clock::now()
}

/// A value of the plugin's configuration, set when it was bound.
pub fn config(key: &str) -> Option<String> {
    host::config::get(key)
}

/// Exports a [`SegmentRule`] as the plugin's `segment` world.
#[macro_export]
macro_rules! export_segment {
    ($rule:ty) => {
        #[doc(hidden)]
        mod __pitboss_segment {
            #[allow(unused_imports)]
            use super::*;
            $crate::__generate_segment!();
            pub struct Export;
            impl exports::pitboss::rules::segmentation::Guest for Export {
                fn evaluate(
                    profile: $crate::types::Profile,
                    event: Option<$crate::types::Event>,
                ) -> Result<$crate::types::Membership, $crate::types::RuleError> {
                    <$rule as $crate::SegmentRule>::evaluate(profile, event)
                }
                fn evaluate_batch(
                    profiles: Vec<$crate::types::Profile>,
                ) -> Result<Vec<$crate::types::Membership>, $crate::types::RuleError> {
                    <$rule as $crate::SegmentRule>::evaluate_batch(profiles)
                }
            }
            export!(Export with_types_in self);
        }
    };
}

/// Exports a [`BonusRule`] as the plugin's `bonus-rule` world.
#[macro_export]
macro_rules! export_bonus_rule {
    ($rule:ty) => {
        #[doc(hidden)]
        mod __pitboss_bonus_rule {
            #[allow(unused_imports)]
            use super::*;
            $crate::__generate_bonus_rule!();
            pub struct Export;
            impl exports::pitboss::rules::bonus_rules::Guest for Export {
                fn evaluate(
                    event: $crate::types::Event,
                    profile: $crate::types::Profile,
                    bonuses: Vec<$crate::types::BonusState>,
                ) -> Result<Vec<$crate::types::BonusAction>, $crate::types::RuleError> {
                    <$rule as $crate::BonusRule>::evaluate(event, profile, bonuses)
                }
            }
            export!(Export with_types_in self);
        }
    };
}

/// Exports an [`OfferScorer`] as the plugin's `offer-scorer` world.
#[macro_export]
macro_rules! export_offer_scorer {
    ($rule:ty) => {
        #[doc(hidden)]
        mod __pitboss_offer_scorer {
            #[allow(unused_imports)]
            use super::*;
            $crate::__generate_offer_scorer!();
            pub struct Export;
            impl exports::pitboss::rules::offer_scoring::Guest for Export {
                fn score(
                    profile: $crate::types::Profile,
                    candidates: Vec<$crate::types::OfferTemplate>,
                    context: $crate::types::OfferContext,
                ) -> Result<Vec<$crate::types::RankedOffer>, $crate::types::RuleError> {
                    <$rule as $crate::OfferScorer>::score(profile, candidates, context)
                }
            }
            export!(Export with_types_in self);
        }
    };
}
