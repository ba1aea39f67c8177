//! The policy gate: the one place that decides whether anything reaches a player — responsible gambling,
//! consent in force per channel and product, jurisdiction packs (licence, banned channels, age, quiet
//! hours, caps), frequency caps, dedup and cooldowns. It never lets marketing through when in doubt: a
//! missing pack, consent or licence is a refusal with its reason.

pub mod gate;
pub mod ledger;
pub mod packs;
pub mod store;

pub use gate::{
    Basis, Caps, Decision, FrequencyPolicy, MessageClass, Priority, Reason, Request, Sent, decide,
};
pub use packs::{Pack, PackDocument, Packs};
pub use store::{PackError, PackStore};

use std::collections::BTreeMap;
use std::sync::Arc;

/// The rules the gate applies besides the player: the jurisdiction packs in force, the frequency
/// policies by id, and the jurisdictions each brand is licensed in (none unless configured: fail closed).
pub struct Policies {
    pub packs: Arc<PackStore>,
    frequency: BTreeMap<String, FrequencyPolicy>,
    licences: BTreeMap<String, Vec<String>>,
}

impl Policies {
    pub fn new(
        packs: Arc<PackStore>,
        frequency: Vec<FrequencyPolicy>,
        licences: BTreeMap<String, Vec<String>>,
    ) -> Policies {
        Policies { packs, frequency: frequency.into_iter().map(|p| (p.id.clone(), p)).collect(), licences }
    }

    /// A frequency policy by id (`fp_default`, …).
    pub fn frequency(&self, id: &str) -> Option<&FrequencyPolicy> {
        self.frequency.get(id)
    }

    /// The jurisdictions the brand holds a licence for.
    pub fn licences(&self, brand: &str) -> &[String] {
        self.licences.get(brand).map_or(&[], Vec::as_slice)
    }
}
