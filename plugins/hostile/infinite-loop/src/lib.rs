//! Hostile test plugin: loops forever. Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let mut n: u64 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
}

pitboss_sdk::export_segment!(Hostile);
