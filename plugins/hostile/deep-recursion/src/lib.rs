//! Hostile test plugin: recurses without end. Never shipped; the host's tests build it to check that
//! the Wasm stack limit holds.

use pitboss_sdk::prelude::*;

struct Hostile;

impl SegmentRule for Hostile {
    fn evaluate(_p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        Ok(Membership::member(format!("{}", dive(core::hint::black_box(u64::MAX)))))
    }
}

#[inline(never)]
fn dive(n: u64) -> u64 {
    if n == 0 { 0 } else { core::hint::black_box(dive(n - 1)).wrapping_add(n) }
}

pitboss_sdk::export_segment!(Hostile);
