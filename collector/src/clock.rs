//! The collector's two clocks. Freshness, grace windows and lag are measured on the monotonic
//! clock, which a wall-clock step (NTP, an operator's `date`) cannot move; wall time is only for
//! display, persisted times and the agents' clock skew.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the epoch, wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds on the monotonic clock, from an arbitrary origin fixed at first use.
pub fn mono_ms() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// One instant on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: i64,
    pub mono_ms: i64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall_ms: now_ms(),
            mono_ms: mono_ms(),
        }
    }

    /// The same number on both clocks (tests, where the two never diverge).
    pub fn same(ms: i64) -> Now {
        Now {
            wall_ms: ms,
            mono_ms: ms,
        }
    }
}

impl From<i64> for Now {
    fn from(ms: i64) -> Now {
        Now::same(ms)
    }
}
