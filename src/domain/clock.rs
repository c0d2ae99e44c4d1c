//! Time as the service sees it: Unix seconds, from the system clock or from a clock a test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Cheap to clone; clones of a manual clock share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `now` until it is set or advanced.
    pub fn manual(now: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(now))) }
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => unix_now(),
        }
    }

    /// Unix milliseconds (a manual clock's seconds, times 1000).
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst).saturating_mul(1000),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Moves a manual clock by `seconds`; the system clock cannot be moved (returns false).
    pub fn advance(&self, seconds: i64) -> bool {
        match &self.manual {
            Some(now) => {
                now.fetch_add(seconds, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// Unix seconds from the system clock (0 before 1970, which no real clock reports).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let clock = Clock::manual(1_000);
        let clone = clock.clone();
        assert!(clock.advance(5));
        assert_eq!(clone.now(), 1_005);
        assert!(!Clock::system().advance(5));
        assert!(Clock::system().now() > 1_700_000_000);
    }
}
