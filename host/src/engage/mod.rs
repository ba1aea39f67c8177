//! Engagement: triggers and journeys, the loop the CRM exists for — an event (or a segment entered)
//! fires a trigger, which sends a template or enters the player in a journey; every contact goes
//! through the one send service and its gate.
//!
//! The `engage` bus consumer follows the segments consumer (so it sees profiles with the event applied
//! and the `segment.*` events it wrote). For each event, in each player's order, it moves the player's
//! journey runs (exits, waits for events) and runs the brand's active triggers; fires, runs, steps and
//! sends are written in the transaction that moves its offset, and a send's idempotency key comes from
//! (trigger version, event id): a restart, a replay of the log or a second host never sends twice. The
//! journey scheduler runs due steps (`journeys::run_due`).
//!
//! This module owns the tables `triggers`, `trigger_versions`, `trigger_fires`, `journeys`,
//! `journey_versions`, `journey_runs` and `journey_steps`.

pub mod conditions;
pub mod defs;
pub mod dry_run;
pub mod journeys;
pub mod triggers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};

use crate::bus::{Handler, LoggedEvent};
use crate::core::Core;

/// The bus consumer's name (its offset's key).
pub const CONSUMER: &str = "engage";

/// What the consumer and the scheduler share: a run entered or moved wakes the scheduler.
pub struct Engage {
    pub core: Arc<Core>,
    wake: Notify,
}

impl Engage {
    pub fn new(core: Arc<Core>) -> Arc<Engage> {
        Arc::new(Engage { core, wake: Notify::new() })
    }
}

/// The capability's bus consumer: it follows the segments consumer.
pub fn consumers(engage: &Arc<Engage>) -> Vec<crate::bus::Consumer> {
    let handler =
        Consumer { engage: engage.clone(), moved: AtomicBool::new(false), fires: Default::default() };
    vec![crate::bus::Consumer::new(CONSUMER, handler).after(crate::segments::CONSUMER)]
}

struct Consumer {
    engage: Arc<Engage>,
    /// The batch entered, moved or sent something: wake the scheduler and the workers once committed.
    moved: AtomicBool,
    /// The batch's fires (outcome, seconds since the event was accepted), counted once committed.
    fires: std::sync::Mutex<Vec<(&'static str, f64)>>,
}

impl Handler for Consumer {
    async fn handle(&self, conn: &mut sqlx::AnyConnection, events: &[LoggedEvent]) -> anyhow::Result<()> {
        let core = &self.engage.core;
        self.fires.lock().expect("fires").clear();
        let mut triggers: HashMap<String, Vec<triggers::Active>> = HashMap::new();
        for e in events {
            if crate::store::erasure::is_pseudonym(&e.player_id) {
                continue;
            }
            if !triggers.contains_key(&e.brand_id) {
                triggers.insert(e.brand_id.clone(), triggers::active(conn, &e.brand_id).await?);
            }
            // Most events concern no trigger and no journey: they cost one read, not a profile.
            let now = core.clock().now();
            let event = e.event();
            let concerned = triggers[&e.brand_id].iter().any(|t| triggers::matches(&t.def, &event, now));
            if !concerned && !journeys::in_one(conn, (&e.brand_id, &e.player_id)).await? {
                continue;
            }
            let Some(stored) =
                crate::profiles::load_in(conn, &core.contacts_key, &e.brand_id, &e.player_id).await?
            else {
                continue;
            };
            let profile = stored.at(&e.brand_id, &e.player_id, now).profile;
            if journeys::on_event(core, conn, e, &profile).await? {
                self.moved.store(true, Ordering::Relaxed);
            }
            for t in &triggers[&e.brand_id] {
                if let Some(f) = triggers::fire(core, conn, t, e, &stored).await? {
                    self.moved.store(true, Ordering::Relaxed);
                    let seconds = (crate::store::now_ms() - e.received_at).max(0) as f64 / 1000.0;
                    self.fires.lock().expect("fires").push((f.outcome, seconds));
                }
            }
        }
        Ok(())
    }

    fn committed(&self, _events: &[LoggedEvent]) {
        for (outcome, seconds) in self.fires.lock().expect("fires").drain(..) {
            self.engage.core.delivery.metrics.fire(outcome, seconds);
        }
        if self.moved.swap(false, Ordering::Relaxed) {
            self.engage.wake.notify_one();
            self.engage.core.delivery.wake.notify_one();
        }
    }
}

/// Runs due journey steps until `stop`: when woken, and every second (for waits coming due).
pub async fn scheduler(engage: Arc<Engage>, mut stop: watch::Receiver<bool>) {
    loop {
        let woken = engage.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Err(e) = journeys::run_due(&engage.core).await {
            tracing::error!(error = %format!("{e:#}"), "journey steps");
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
