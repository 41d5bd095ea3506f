//! The coordinator's clock: wall time read once at start, advanced by a monotonic clock.
//!
//! The core's timers (leases, timeouts, backoff) must not fire early or late because someone
//! changed the system clock; anchoring to `Instant` makes them immune to wall-clock jumps
//! while the coordinator runs.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flotilla_core::Timestamp;

/// A clock that never jumps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_start: i64,
    started: Instant,
}

impl Clock {
    /// A clock anchored at the current wall time.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            wall_at_start: wall,
            started: Instant::now(),
        }
    }

    /// The current instant.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.wall_at_start + self.started.elapsed().as_millis() as i64)
    }

    /// When the clock was created.
    pub fn started_at(&self) -> Timestamp {
        Timestamp::from_millis(self.wall_at_start)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
