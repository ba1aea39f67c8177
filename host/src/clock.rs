//! The host's one clock: decisions, profile reads, the gate, the workers and consent changes from
//! events all read it. The system clock, shifted by an offset a test may set: time still passes, from a
//! moment the test chose.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The clock (cheap to clone: clones share the offset).
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    pub fn now(&self) -> jiff::Timestamp {
        let ms = jiff::Timestamp::now().as_millisecond() + self.0.load(Ordering::Relaxed);
        jiff::Timestamp::from_millisecond(ms).expect("a clock within range")
    }

    pub fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// Moves the clock so that it reads `at` now.
    pub fn set(&self, at: jiff::Timestamp) {
        self.0.store(at.as_millisecond() - jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
    }

    pub fn advance(&self, by: jiff::SignedDuration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}
