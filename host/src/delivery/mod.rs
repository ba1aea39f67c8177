//! Delivery: what reaches players, and only after the policy gate. A send is gated and written to the
//! outbox in one transaction (`outbox`); workers take due deliveries, ask the gate again right before
//! sending, and hand them to a channel (`worker`, `channels`); feedback from channels and providers
//! changes consents and contacts at once (`feedback`). Nothing leaves that is not stored first, and no
//! path reaches a provider without the gate.

pub mod channels;
pub mod feedback;
pub mod outbox;
pub mod templates;
pub mod worker;

use std::collections::BTreeMap;

use tokio::sync::Notify;

use crate::config::{Clock, Settings};
use crate::policy::{FrequencyPolicy, PackStore};
use crate::telemetry::Metrics;

/// What the send path, the workers and the feedback endpoints share.
pub struct Context {
    pub settings: Settings,
    /// The jurisdiction packs in force.
    pub packs: std::sync::Arc<PackStore>,
    pub policies: BTreeMap<String, FrequencyPolicy>,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Wakes the workers when a send queued something.
    pub wake: Notify,
}

impl Context {
    pub fn new(settings: Settings, clock: Clock, packs: std::sync::Arc<PackStore>) -> Context {
        let policies = settings.frequency_policies().into_iter().map(|p| (p.id.clone(), p)).collect();
        Context { settings, packs, policies, clock, metrics: Metrics::default(), wake: Notify::new() }
    }

    /// The jurisdictions the brand is licensed in (none unless configured: fail closed).
    pub fn licences(&self, brand: &str) -> &[String] {
        self.settings.brands.get(brand).map_or(&[], |b| b.licences.as_slice())
    }
}

/// A fresh delivery id.
pub fn new_delivery_id() -> String {
    let mut rnd = [0u8; 12];
    getrandom::fill(&mut rnd).expect("randomness");
    format!("dlv_{}", hex::encode(rnd))
}
