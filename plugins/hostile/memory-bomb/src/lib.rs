//! Hostile test plugin: allocates until something stops it (16 MiB at a time, untouched, so it is memory
//! and not fuel that runs out). Never shipped; the host's tests build it to check the limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(16 << 20);
            chunk.push(1u8);
            hoard.push(core::hint::black_box(chunk));
        }
    }
}

pitboss_sdk::export_segment!(Hostile);
