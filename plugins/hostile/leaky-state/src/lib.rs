//! Hostile test plugin: tries to carry state from one decision to the next (a global counter and the
//! previous player's id). With a fresh instance per decision it must always see an empty past.

use std::sync::Mutex;

use pitboss_sdk::prelude::*;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let mut seen = SEEN.lock().unwrap();
        let before = seen.join(",");
        seen.push(p.player_id);
        Ok(Membership::member(format!("seen before: [{before}]")).with_score(seen.len() as f64))
    }
}

pitboss_sdk::export_segment!(Hostile);
