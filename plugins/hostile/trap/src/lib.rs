//! Hostile test plugin: panics. Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        panic!("rule bug: this plugin always panics")
    }
}

pitboss_sdk::export_segment!(Hostile);
