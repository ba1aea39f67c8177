//! Hostile test plugin: allocates until something stops it. Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

pitboss_sdk::export_segment!(Hostile);
