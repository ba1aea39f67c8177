//! Offers and the bonus engine (§5, §6.3, §8): offer templates per brand, the offer service that turns
//! a scorer's ranking into an offer the host has checked (`service`), the bonus ledger an accepted
//! offer enters (`ledger`), the bus consumer that moves it on the player's events with the bonus rule
//! bound for their jurisdiction (`engine`), and the outbox of signed calls that tell the platform's
//! wallet what to grant, release or forfeit (`calls`). The platform's wallet owns the money; Pitboss
//! decides and keeps the ledger.
//!
//! This module owns the tables `offer_templates`, `offer_template_versions`, `offers`, `offer_spend`,
//! `bonuses`, `bonus_moves`, `bonus_events` and `platform_calls`.

pub mod calls;
pub mod engine;
pub mod ledger;
pub mod service;
pub mod templates;

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::core::Core;

/// What the consumer and the call worker share: a commit that queued a call wakes the worker.
pub struct Offers {
    pub core: Arc<Core>,
    pub wake: Arc<Notify>,
}

impl Offers {
    pub fn new(core: Arc<Core>) -> Arc<Offers> {
        Arc::new(Offers { core, wake: Arc::new(Notify::new()) })
    }
}

/// The capability's bus consumer: the bonus engine, after the profiles.
pub fn consumers(offers: &Arc<Offers>) -> Vec<crate::bus::Consumer> {
    let engine = engine::Engine::new(offers.core.clone(), offers.wake.clone());
    vec![
        crate::bus::Consumer::new(engine::CONSUMER, engine)
            .after(crate::profiles::CONSUMER)
            .platform_events_only(),
    ]
}

/// Posts platform calls and ends overdue bonuses until `stop`.
pub async fn worker(offers: Arc<Offers>, stop: watch::Receiver<bool>) {
    calls::run(offers.core.clone(), offers.wake.clone(), stop).await
}
