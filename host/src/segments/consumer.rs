//! The `segments` bus consumer: after the profile consumer applied a player's events, each of the
//! brand's segments is decided again for the player (with their latest event), in their order; the
//! memberships that change, their decisions' records and the `segment.entered` / `segment.left` events
//! are written in the transaction the offset moves in. Its own `segment.*` events are passed over.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Decision, Segment};
use crate::bus::{Bus, Handler, LoggedEvent};
use crate::core::Core;

pub struct SegmentUpdater {
    pub core: Arc<Core>,
    /// A batch wrote events: the other consumers are woken once it is committed.
    emitted: AtomicBool,
}

impl SegmentUpdater {
    pub fn new(core: Arc<Core>) -> Self {
        SegmentUpdater { core, emitted: AtomicBool::new(false) }
    }
}

impl Handler for SegmentUpdater {
    async fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
        passed: &mut crate::bus::Passed,
    ) -> anyhow::Result<()> {
        // Each player once, with their latest event of the batch (the profile already has them all).
        let mut latest: Vec<&LoggedEvent> = Vec::new();
        for e in events {
            match latest.iter_mut().find(|l| l.brand_id == e.brand_id && l.player_id == e.player_id) {
                Some(l) => *l = e,
                None => latest.push(e),
            }
        }
        let core = &self.core;
        latest.retain(|e| !crate::store::erasure::is_pseudonym(&e.player_id));
        // The brands' segments, and the profiles of the batch's players read together, brand by brand.
        let mut segments: HashMap<String, Vec<Segment>> = HashMap::new();
        let mut profiles = HashMap::new();
        for e in &latest {
            if segments.contains_key(&e.brand_id) {
                continue;
            }
            let of_brand = super::of_brand(conn, &e.brand_id).await?;
            if !of_brand.is_empty() {
                let players: Vec<String> =
                    latest.iter().filter(|l| l.brand_id == e.brand_id).map(|l| l.player_id.clone()).collect();
                let read =
                    crate::profiles::load_many_in(conn, &core.contacts_key, &e.brand_id, &players, passed)
                        .await?;
                profiles.extend(read.into_iter().map(|(p, stored)| ((e.brand_id.clone(), p), stored)));
            }
            segments.insert(e.brand_id.clone(), of_brand);
        }
        // The batch's players' open spans, one query per segment.
        let mut open: HashMap<String, HashMap<String, (i64, String)>> = HashMap::new();
        for (brand, of_brand) in &segments {
            let players: Vec<String> =
                latest.iter().filter(|l| &l.brand_id == brand).map(|l| l.player_id.clone()).collect();
            for segment in of_brand {
                let spans = crate::store::segments::open_spans(
                    conn,
                    &segment.id,
                    crate::store::Players::List(&players),
                )
                .await?;
                open.insert(segment.id.clone(), spans);
            }
        }
        // Every (player, segment) decided at once, then applied in the players' order.
        let now = core.clock().now();
        let (mut asked, mut asks) = (Vec::new(), Vec::new());
        for e in &latest {
            let Some(stored) = profiles.remove(&(e.brand_id.clone(), e.player_id.clone())) else {
                continue;
            };
            let profile = stored.at(&e.brand_id, &e.player_id, now).profile;
            for segment in &segments[&e.brand_id] {
                asked.push((*e, segment, profile.jurisdiction.clone()));
                asks.push((segment, e.player_id.as_str(), profile.clone(), Some(e.event())));
            }
        }
        let decisions = super::decide_many(core, asks, now).await;
        for ((e, segment, jurisdiction), decision) in asked.into_iter().zip(decisions) {
            let via = format!("event:{}", e.seq);
            let player = (e.player_id.as_str(), jurisdiction.as_str());
            match decision? {
                Decision::Verdict(verdict, evaluated) => {
                    let span = open.get(&segment.id).and_then(|spans| spans.get(&e.player_id));
                    let Some(change) = super::apply(
                        conn,
                        segment.target(),
                        player,
                        &verdict,
                        span,
                        &via,
                        now.as_millisecond(),
                    )
                    .await?
                    else {
                        continue;
                    };
                    self.emitted.store(true, Ordering::Relaxed);
                    if let Some(evaluated) = evaluated {
                        let recorded = evaluated.record_in(conn).await?;
                        super::link_decision(conn, change, recorded.seq).await?;
                    }
                }
                Decision::Failed(evaluated) => {
                    // Membership stays as it was; the failure is on record with its version.
                    tracing::warn!(segment = %segment.name, player = %e.player_id, seq = e.seq,
                        "the segment's rule failed; membership unchanged");
                    evaluated.record_in(conn).await?;
                }
            }
        }
        Ok(())
    }

    fn committed(&self, _events: &[LoggedEvent]) {
        if self.emitted.swap(false, Ordering::Relaxed) {
            self.core.bus.notify();
        }
    }
}
