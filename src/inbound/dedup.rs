//! Remembers recent deliveries so that WeCom's retries are acknowledged without being processed
//! again. A delivery is identified by its corp and a digest of its ciphertext: a retry carries the
//! same ciphertext, while two genuine events never do (each starts with 16 random bytes). Each
//! entry keeps how the delivery was acknowledged, so that an authenticated retry is answered the
//! same way without being decrypted and decoded again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::crypto::SealedReply;
use crate::domain::DeliveryKey;

/// How an accepted delivery is answered when it arrives again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    /// A classic event: plain `success`.
    Success,
    /// A zone event or an async call: a sealed `{"errcode":0,"errmsg":"ok"}`.
    SealedOk,
    /// A synchronous call still running: the duplicate is told to retry, and is not executed.
    Running,
    /// A synchronous call's answer, replayed as it was so the call runs once.
    Answered(Arc<SealedReply>),
}

/// Bounded in time (`window`), in entries (`capacity`, oldest forgotten first) and in the bytes of
/// cached answers (`answer_budget`, oldest answers forgotten first).
pub struct DeliveryLog {
    window: Duration,
    capacity: usize,
    answer_budget: usize,
    // A std Mutex: every critical section is a few map operations with no await inside.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashMap<DeliveryKey, (Instant, Acknowledgement)>,
    order: VecDeque<(Instant, DeliveryKey)>,
    /// Keys in the order their answers were cached. May hold keys since forgotten; it is kept no
    /// longer than `capacity`.
    answered: VecDeque<DeliveryKey>,
    answer_bytes: usize,
}

impl DeliveryLog {
    pub fn new(window: Duration, capacity: usize, answer_budget: usize) -> Self {
        DeliveryLog { window, capacity: capacity.max(1), answer_budget, state: Mutex::new(State::default()) }
    }

    pub fn key(corp_id: &str, encrypt: &str) -> DeliveryKey {
        let mut hasher = Sha1::new();
        hasher.update(corp_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(encrypt.as_bytes());
        DeliveryKey(hasher.finalize().into())
    }

    /// How `key` is to be acknowledged, if it was delivered within the window.
    pub fn acknowledgement(&self, key: &DeliveryKey) -> Option<Acknowledgement> {
        let state = self.lock();
        let (at, acknowledgement) = state.seen.get(key)?;
        (at.elapsed() < self.window).then(|| acknowledgement.clone())
    }

    /// Records the delivery; returns false when it was already recorded (a duplicate).
    pub fn first_delivery(&self, key: DeliveryKey, acknowledgement: Acknowledgement) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        state.expire(now, self.window);
        if state.seen.contains_key(&key) {
            return false;
        }
        while state.seen.len() >= self.capacity {
            let Some((_, oldest)) = state.order.pop_front() else { break };
            state.remove(&oldest);
        }
        state.seen.insert(key, (now, acknowledgement));
        state.order.push_back((now, key));
        true
    }

    /// Keeps a synchronous call's answer for its duplicates. An answer larger than the whole
    /// budget is not kept: the delivery is forgotten, and a duplicate runs again.
    pub fn answer(&self, key: &DeliveryKey, reply: SealedReply) {
        let size = answer_size(&reply);
        let mut state = self.lock();
        if size > self.answer_budget {
            state.remove(key);
            state.order.retain(|(_, queued)| queued != key);
            return;
        }
        let Some((_, acknowledgement)) = state.seen.get_mut(key) else { return };
        *acknowledgement = Acknowledgement::Answered(Arc::new(reply));
        state.answer_bytes += size;
        state.answered.push_back(*key);
        while state.answer_bytes > self.answer_budget || state.answered.len() > self.capacity {
            let Some(oldest) = state.answered.pop_front() else { break };
            if matches!(state.seen.get(&oldest), Some((_, Acknowledgement::Answered(_)))) {
                state.remove(&oldest);
            }
        }
    }

    /// Forgets a delivery whose processing failed, so that the retry is processed.
    pub fn forget(&self, key: &DeliveryKey) {
        let mut state = self.lock();
        state.remove(key);
        state.order.retain(|(_, queued)| queued != key);
    }

    /// Bytes of cached answers (for tests and metrics).
    pub fn answer_bytes(&self) -> usize {
        self.lock().answer_bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn answer_size(reply: &SealedReply) -> usize {
    // The strings plus what the entry costs around them.
    reply.encrypt.len() + reply.msg_signature.len() + reply.timestamp.len() + reply.nonce.len() + 128
}

impl State {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.order.pop_front();
            self.remove(&key);
        }
    }

    /// Removes an entry from the map, returning its answer's bytes to the budget. `order` and
    /// `answered` are the caller's to keep.
    fn remove(&mut self, key: &DeliveryKey) {
        if let Some((_, Acknowledgement::Answered(reply))) = self.seen.remove(key) {
            self.answer_bytes -= answer_size(&reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_delivery_is_a_duplicate_until_forgotten() {
        let log = DeliveryLog::new(Duration::from_secs(60), 10, 1 << 20);
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
        let log = DeliveryLog::new(Duration::from_secs(60), 2, 1 << 20);
        let keys: Vec<_> = (0..3).map(|i| DeliveryLog::key("ww", &i.to_string())).collect();
        assert!(keys.iter().all(|key| log.first_delivery(*key, Acknowledgement::Success)));
        assert!(log.first_delivery(keys[0], Acknowledgement::Success), "the oldest was evicted");
        assert!(!log.first_delivery(keys[2], Acknowledgement::Success));
    }

    #[test]
    fn entries_expire_after_the_window() {
        let log = DeliveryLog::new(Duration::ZERO, 10, 1 << 20);
        let key = DeliveryLog::key("ww", "c");
        assert!(log.first_delivery(key, Acknowledgement::Success));
        assert!(log.first_delivery(key, Acknowledgement::Success));
    }

    fn reply(bytes: usize) -> SealedReply {
        SealedReply {
            encrypt: "e".repeat(bytes),
            msg_signature: String::new(),
            timestamp: String::new(),
            nonce: String::new(),
        }
    }

    #[test]
    fn answers_are_replayed_and_bounded_in_bytes() {
        let log = DeliveryLog::new(Duration::from_secs(60), 100, 3 * 1128);
        let keys: Vec<_> = (0..5).map(|i| DeliveryLog::key("ww", &i.to_string())).collect();
        assert!(log.first_delivery(keys[0], Acknowledgement::Running));
        assert_eq!(log.acknowledgement(&keys[0]), Some(Acknowledgement::Running));
        log.answer(&keys[0], reply(1000));
        assert_eq!(log.acknowledgement(&keys[0]), Some(Acknowledgement::Answered(Arc::new(reply(1000)))));
        for key in &keys[1..4] {
            assert!(log.first_delivery(*key, Acknowledgement::Running));
            log.answer(key, reply(1000));
        }
        assert_eq!(log.answer_bytes(), 3 * 1128, "the oldest answer made room");
        assert_eq!(log.acknowledgement(&keys[0]), None);
        assert!(matches!(log.acknowledgement(&keys[3]), Some(Acknowledgement::Answered(_))));
        assert!(log.first_delivery(keys[4], Acknowledgement::Running));
        log.answer(&keys[4], reply(10_000));
        assert_eq!(log.acknowledgement(&keys[4]), None, "too large to keep: forgotten, runs again");
        log.forget(&keys[3]);
        assert_eq!(log.answer_bytes(), 2 * 1128);
    }

    #[test]
    fn answers_are_bounded_in_entries() {
        let log = DeliveryLog::new(Duration::from_secs(60), 3, 1 << 20);
        for i in 0..10 {
            let key = DeliveryLog::key("ww", &i.to_string());
            assert!(log.first_delivery(key, Acknowledgement::Running));
            log.answer(&key, reply(10));
        }
        assert_eq!(log.answer_bytes(), 3 * 138);
        let state = log.lock();
        assert!(state.answered.len() <= 3 && state.seen.len() <= 3);
    }
}
