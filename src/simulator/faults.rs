//! Seeded fault injection: each upstream request fails with probability `rate`, in one of the
//! ways real upstreams fail. The same seed gives the same sequence of decisions.

use std::sync::Mutex;
use std::time::Duration;

use super::corpus::SplitMix;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// errcode -1, "system busy".
    Busy,
    /// errcode 45009, API rate limit.
    RateLimit,
    /// errcode 45033, concurrency limit.
    Concurrency,
    /// HTTP 500 with an HTML body.
    ServerError,
    /// Answer correctly, but only after a delay.
    Delay(Duration),
    /// Answer with the first half of the body.
    Truncated,
}

pub struct FaultInjector {
    rate: Mutex<f64>,
    max_delay: Duration,
    rng: Mutex<SplitMix>,
}

impl FaultInjector {
    pub fn new(rate: f64, seed: u64, max_delay: Duration) -> FaultInjector {
        FaultInjector { rate: Mutex::new(rate), max_delay, rng: Mutex::new(SplitMix::new(seed)) }
    }

    pub fn set_rate(&self, rate: f64) {
        *self.rate.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = rate;
    }

    /// The fault for the next request, if any.
    pub fn next(&self) -> Option<Fault> {
        let rate = *self.rate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if rate <= 0.0 || !rng.chance(rate) {
            return None;
        }
        Some(match rng.below(6) {
            0 => Fault::Busy,
            1 => Fault::RateLimit,
            2 => Fault::Concurrency,
            3 => Fault::ServerError,
            4 => Fault::Delay(self.max_delay.mul_f64((rng.below(1000) as f64 + 1.0) / 1000.0)),
            _ => Fault::Truncated,
        })
    }
}
