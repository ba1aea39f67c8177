//! What one plugin call may consume. Every call runs under a `Limits`: a default per world, overridable
//! per binding or on the command line, never above the hard ceilings. README lists all of them.

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

use super::World;
use super::error::LimitExceeded;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wasm instructions (fuel units) the call may execute.
    pub fuel: u64,
    /// Linear memory, all memories of the instance together.
    pub memory_bytes: u64,
    /// Wall-clock deadline of the whole call, instantiation included.
    pub deadline_ms: u64,
    /// Size of the input handed to the plugin (strings and fields, as laid out for the call).
    pub input_bytes: u64,
    /// Size of the answer.
    pub output_bytes: u64,
    /// Bytes written through `pitboss:rules/log`.
    pub log_bytes: u64,
}

impl Limits {
    /// The hard ceilings: nothing, not even a binding's override, goes above these.
    pub const CEILING: Limits = Limits {
        fuel: 5_000_000_000,
        memory_bytes: 512 * MIB,
        deadline_ms: 5_000,
        input_bytes: 64 * MIB,
        output_bytes: 16 * MIB,
        log_bytes: MIB,
    };

    /// The defaults of a world, for one decision (for the segment batch form: one chunk).
    pub const fn default_for(world: World) -> Limits {
        match world {
            World::Segment => Limits {
                fuel: 10_000_000,
                memory_bytes: 64 * MIB,
                deadline_ms: 100,
                input_bytes: 16 * MIB,
                output_bytes: 4 * MIB,
                log_bytes: 16 * KIB,
            },
            World::BonusRule => Limits {
                fuel: 10_000_000,
                memory_bytes: 64 * MIB,
                deadline_ms: 100,
                input_bytes: 256 * KIB,
                output_bytes: 64 * KIB,
                log_bytes: 16 * KIB,
            },
            World::OfferScorer => Limits {
                fuel: 20_000_000,
                memory_bytes: 64 * MIB,
                deadline_ms: 200,
                input_bytes: 256 * KIB,
                output_bytes: 64 * KIB,
                log_bytes: 16 * KIB,
            },
        }
    }

    /// Each field at most its ceiling.
    pub fn clamped(self) -> Limits {
        let c = Self::CEILING;
        Limits {
            fuel: self.fuel.min(c.fuel),
            memory_bytes: self.memory_bytes.min(c.memory_bytes),
            deadline_ms: self.deadline_ms.min(c.deadline_ms),
            input_bytes: self.input_bytes.min(c.input_bytes),
            output_bytes: self.output_bytes.min(c.output_bytes),
            log_bytes: self.log_bytes.min(c.log_bytes),
        }
    }
}

/// Caps the linear memory of one call and remembers its peak. Going over the cap traps with
/// `LimitExceeded::Memory` rather than failing the `memory.grow`, so that a memory bomb is reported as
/// such, not as whatever the guest's allocator does on failure.
pub(crate) struct MemoryLimiter {
    limit: u64,
    current: u64,
    pub(crate) peak: u64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryLimiter { limit, current: 0, peak: 0 }
    }
}

/// Tables are small; a guest growing one without bound is as hostile as a memory bomb.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.current + (desired - current) as u64;
        if after > self.limit {
            return Err(LimitExceeded::Memory { limit_bytes: self.limit }.into());
        }
        self.current = after;
        self.peak = self.peak.max(after);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_the_ceilings() {
        for world in World::ALL {
            let d = Limits::default_for(world);
            assert_eq!(d, d.clamped(), "{world:?}");
        }
    }

    #[test]
    fn memory_over_the_limit_traps_and_peak_is_kept() {
        let mut l = MemoryLimiter::new(10 * MIB);
        assert!(l.memory_growing(0, (4 * MIB) as usize, None).unwrap());
        assert!(l.memory_growing((4 * MIB) as usize, (8 * MIB) as usize, None).unwrap());
        let err = l.memory_growing((8 * MIB) as usize, (12 * MIB) as usize, None).unwrap_err();
        assert!(matches!(err.downcast_ref::<LimitExceeded>(), Some(LimitExceeded::Memory { .. })));
        assert_eq!(l.peak, 8 * MIB);
    }
}
