//! Hostile test plugin: answers with an 8 MiB reason. Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        Ok(Membership::member("x".repeat(8 << 20)))
    }
}

pitboss_sdk::export_segment!(Hostile);
