//! Remembers recent deliveries so that WeCom's retries are acknowledged without being processed
//! again. A delivery is identified by its corp and a digest of its ciphertext: a retry carries the
//! same ciphertext, while two genuine events never do (each starts with 16 random bytes). Each
//! entry keeps how the delivery was acknowledged, so that an authenticated retry is answered the
//! same way without being decrypted and decoded again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::domain::DeliveryKey;

/// How an accepted delivery was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledgement {
    /// A classic event: plain `success`.
    Success,
    /// A zone event or an async call: a sealed `{"errcode":0,"errmsg":"ok"}`.
    SealedOk,
}

/// Bounded in time (`window`) and in size (`capacity`, oldest forgotten first).
pub struct DeliveryLog {
    window: Duration,
    capacity: usize,
    // A std Mutex: every critical section is a few map operations with no await inside.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashMap<DeliveryKey, (Instant, Acknowledgement)>,
    order: VecDeque<(Instant, DeliveryKey)>,
}

impl DeliveryLog {
    pub fn new(window: Duration, capacity: usize) -> Self {
        DeliveryLog { window, capacity: capacity.max(1), state: Mutex::new(State::default()) }
    }

    pub fn key(corp_id: &str, encrypt: &str) -> DeliveryKey {
        let mut hasher = Sha1::new();
        hasher.update(corp_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(encrypt.as_bytes());
        DeliveryKey(hasher.finalize().into())
    }

    /// How `key` was acknowledged, if it was delivered within the window.
    pub fn acknowledgement(&self, key: &DeliveryKey) -> Option<Acknowledgement> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (at, acknowledgement) = state.seen.get(key)?;
        (at.elapsed() < self.window).then_some(*acknowledgement)
    }

    /// Records the delivery; returns false when it was already recorded (a duplicate).
    pub fn first_delivery(&self, key: DeliveryKey, acknowledgement: Acknowledgement) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.expire(now, self.window);
        if state.seen.contains_key(&key) {
            return false;
        }
        while state.seen.len() >= self.capacity {
            let Some((_, oldest)) = state.order.pop_front() else { break };
            state.seen.remove(&oldest);
        }
        state.seen.insert(key, (now, acknowledgement));
        state.order.push_back((now, key));
        true
    }

    /// Forgets a delivery whose processing failed, so that the retry is processed.
    pub fn forget(&self, key: &DeliveryKey) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.seen.remove(key);
        state.order.retain(|(_, queued)| queued != key);
    }
}

impl State {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_delivery_is_a_duplicate_until_forgotten() {
        let log = DeliveryLog::new(Duration::from_secs(60), 10);
        let key = DeliveryLog::key("ww1", "cipher");
        assert!(log.first_delivery(key, Acknowledgement::Success));
        assert_eq!(log.acknowledgement(&key), Some(Acknowledgement::Success));
        assert!(!log.first_delivery(key, Acknowledgement::Success));
        log.forget(&key);
        assert_eq!(log.acknowledgement(&key), None);
        assert!(log.first_delivery(key, Acknowledgement::Success));
        assert!(log.first_delivery(DeliveryLog::key("ww2", "cipher"), Acknowledgement::SealedOk), "corps are distinct");
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let log = DeliveryLog::new(Duration::from_secs(60), 2);
        let keys: Vec<_> = (0..3).map(|i| DeliveryLog::key("ww", &i.to_string())).collect();
        assert!(keys.iter().all(|key| log.first_delivery(*key, Acknowledgement::Success)));
        assert!(log.first_delivery(keys[0], Acknowledgement::Success), "the oldest was evicted");
        assert!(!log.first_delivery(keys[2], Acknowledgement::Success));
    }

    #[test]
    fn entries_expire_after_the_window() {
        let log = DeliveryLog::new(Duration::ZERO, 10);
        let key = DeliveryLog::key("ww", "c");
        assert!(log.first_delivery(key, Acknowledgement::Success));
        assert!(log.first_delivery(key, Acknowledgement::Success));
    }
}
