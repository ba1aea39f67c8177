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

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Settings;
use crate::policy::Policies;
use crate::telemetry::Metrics;

/// What the send path, the workers and the feedback endpoints share.
pub struct Context {
    pub settings: Settings,
    /// The gate's rules: packs, frequency policies, licences.
    pub policies: std::sync::Arc<Policies>,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Wakes the workers when a send queued something.
    pub wake: Notify,
}

impl Context {
    pub fn new(settings: Settings, clock: Clock, policies: std::sync::Arc<Policies>) -> Context {
        Context { settings, policies, clock, metrics: Metrics::default(), wake: Notify::new() }
    }
}

/// A fresh delivery id.
pub fn new_delivery_id() -> String {
    let mut rnd = [0u8; 12];
    getrandom::fill(&mut rnd).expect("randomness");
    format!("dlv_{}", hex::encode(rnd))
}
