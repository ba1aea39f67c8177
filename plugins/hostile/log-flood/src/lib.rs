//! Hostile test plugin: logs without end. Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let line = "flood ".repeat(100);
        loop {
            log(Level::Info, &line);
        }
    }
}

pitboss_sdk::export_segment!(Hostile);
