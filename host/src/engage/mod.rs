//! Engagement: triggers and journeys, the loop the CRM exists for — an event (or a segment entered)
//! fires a trigger, which sends a template or enters the player in a journey; every contact goes
//! through the one send service and its gate.
//!
//! The `engage` bus consumer follows the profile consumer, so it sees profiles with the event applied;
//! the `segment.*` events the segments consumer writes come to it in the log, like any other. It does
//! not wait for the segments consumer: a trigger asks a segment's rule itself, and on SQLite it runs
//! before that consumer in their group's transaction, so that a decision does not wait for every
//! segment of the batch's players to be decided again. For each event, in each player's order, it
//! moves the player's journey runs (exits, waits for events) and runs the brand's active triggers;
//! fires, runs, steps and sends are written in the transaction that moves its offset, and a send's
//! idempotency key comes from (trigger version, event id): a restart, a replay of the log or a second
//! host never sends twice. The journey scheduler runs due steps (`journeys::run_due`).
//!
//! This module owns the tables `triggers`, `trigger_versions`, `trigger_fires`, `journeys`,
//! `journey_versions`, `journey_runs` and `journey_steps`.

pub mod conditions;
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

/// The capability's bus consumer: it follows the profile consumer.
pub fn consumers(engage: &Arc<Engage>) -> Vec<crate::bus::Consumer> {
    let handler =
        Consumer { engage: engage.clone(), moved: AtomicBool::new(false), fires: Default::default() };
    vec![crate::bus::Consumer::new(CONSUMER, handler).after(crate::profiles::CONSUMER)]
}

struct Consumer {
    engage: Arc<Engage>,
    /// The batch entered, moved or sent something: wake the scheduler and the workers once committed.
    moved: AtomicBool,
    /// The batch's fires (outcome, seconds since the event was accepted), counted once committed.
    fires: std::sync::Mutex<Vec<(&'static str, f64)>>,
}

impl Handler for Consumer {
    async fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
        passed: &mut crate::bus::Passed,
    ) -> anyhow::Result<()> {
        let core = &self.engage.core;
        self.fires.lock().expect("fires").clear();
        let mut triggers: HashMap<String, Vec<triggers::Active>> = HashMap::new();
        let events: Vec<&LoggedEvent> =
            events.iter().filter(|e| !crate::store::erasure::is_pseudonym(&e.player_id)).collect();
        // Which events concern a trigger (by type, window and age) or a player in a journey: only their
        // players' profiles are read, brand by brand, in a few queries for the whole batch.
        let now = core.clock().now();
        let mut concerned = Vec::with_capacity(events.len());
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for e in &events {
            if !triggers.contains_key(&e.brand_id) {
                triggers.insert(e.brand_id.clone(), triggers::active(conn, &e.brand_id).await?);
            }
            let event = e.event();
            let matched = triggers[&e.brand_id].iter().any(|t| triggers::matches(&t.def, &event, now));
            concerned.push(matched);
            wanted.entry(&e.brand_id).or_default().push(e.player_id.clone());
        }
        let mut profiles = HashMap::new();
        // Players with a run in flight, (brand, player): only their events can move a run. A trigger
        // of this batch that enters a player adds them, for their later events in the batch.
        let mut in_journeys = std::collections::HashSet::new();
        for (brand, mut players) in wanted {
            players.sort();
            players.dedup();
            let in_flight = journeys::in_one_of(conn, brand, &players).await?;
            let needed: Vec<String> = events
                .iter()
                .zip(&concerned)
                .filter(|(e, matched)| e.brand_id == brand && (**matched || in_flight.contains(&e.player_id)))
                .map(|(e, _)| e.player_id.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if needed.is_empty() {
                continue;
            }
            let read =
                crate::profiles::load_many_in(conn, &core.contacts_key, brand, &needed, passed).await?;
            profiles.extend(read.into_iter().map(|(p, stored)| ((brand.to_string(), p), stored)));
            in_journeys.extend(in_flight.into_iter().map(|p| (brand.to_string(), p)));
        }
        // What each trigger makes of each event, the rules asked together for the whole batch (a rule
        // reads the profile, which holds the whole batch already, and writes nothing).
        let asks: Vec<triggers::Consider> = events
            .iter()
            .flat_map(|e| triggers[&e.brand_id].iter().map(move |t| (*e, t)))
            .filter_map(|(e, t)| Some((t, e, &**profiles.get(&(e.brand_id.clone(), e.player_id.clone()))?)))
            .collect();
        let considered = triggers::consider_many(core, &asks).await;
        // Those a replay or another host took already, asked once for the batch.
        let candidates: Vec<_> = asks
            .iter()
            .zip(&considered)
            .filter(|(_, c)| matches!(c, Ok(Some(_))))
            .map(|((t, e, _), _)| (*t, *e))
            .collect();
        let mut taken = triggers::taken(conn, &candidates).await?;
        let mut considered = considered.into_iter();
        for e in &events {
            let player = (e.brand_id.clone(), e.player_id.clone());
            let Some(stored) = profiles.get(&player) else { continue };
            if in_journeys.contains(&player) {
                let profile = stored.at(&e.brand_id, &e.player_id, now).profile;
                if journeys::on_event(core, conn, e, &profile).await? {
                    self.moved.store(true, Ordering::Relaxed);
                }
            }
            for t in &triggers[&e.brand_id] {
                let Some(c) = considered.next().expect("one per trigger and event")? else { continue };
                if !taken.insert((t.id.clone(), e.event_id.clone())) {
                    continue;
                }
                if let Some(f) = triggers::fire_considered(core, conn, t, e, stored, c).await? {
                    if f.run_id.is_some() {
                        in_journeys.insert(player.clone());
                    }
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

/// Runs due journey steps until `stop`: while more are due, when woken, and every second (for waits
/// coming due).
pub async fn scheduler(engage: Arc<Engage>, mut stop: watch::Receiver<bool>) {
    loop {
        let woken = engage.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let more = journeys::run_due(&engage.core).await.unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "journey steps");
            false
        });
        if *stop.borrow() {
            return;
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
