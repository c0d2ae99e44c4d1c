//! Background work has one shape. A [`Worker`]'s `round` does a bounded piece of work and says
//! what it found ([`Round`]); [`spawn`] runs rounds until shutdown: at once again while there is
//! more work, after a capped, jittered backoff when a round failed, and otherwise when woken or
//! when the idle timer fires. On shutdown a round under way gets [`ROUND_DRAIN`] to finish (so a
//! notification WeCom has already taken is also marked as taken, not sent again after a restart);
//! past that it is cancelled where it stands, so every round must still leave durable state
//! consistent at every await (each of ours commits in transactions).
//!
//! Also here: the shutdown signal every loop watches, and the process's termination signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::domain::BoxFuture;

/// What one round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Work was done and more is waiting: run again without sleeping.
    More,
    /// Nothing is left: wait for a wake-up or the idle timer.
    Idle,
    /// Something failed and is kept for later: back off, then try again.
    Failed,
    /// Nothing is due before this long (entries waiting out their own backoff): wait for a
    /// wake-up or this long, whichever comes first, and never longer than the idle timer.
    Sleep(Duration),
}

pub trait Worker: Send + Sync + 'static {
    fn round(&self) -> BoxFuture<'_, Round>;
}

/// A round that may fail outright: the failure is logged (as `worker`) and backed off from.
pub fn logged<E: std::fmt::Display>(worker: &'static str, outcome: Result<Round, E>) -> Round {
    outcome.unwrap_or_else(|error| {
        tracing::warn!(worker, %error, "round failed; backing off");
        Round::Failed
    })
}

/// Capped exponential backoff with full jitter: before retry `n` (from 0), a random delay in
/// `[0, min(max, base * 2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(rand::random::<f64>())
    }

    /// As [`Backoff::delay`], but never shorter than `base`: for entries that must not be
    /// retried at once after a failure.
    pub fn delay_at_least_base(&self, retry: u32) -> Duration {
        self.delay(retry).max(self.base)
    }

    /// The largest delay retry `n` may draw.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base.saturating_mul(1u32 << retry.min(20)).min(self.max)
    }
}

/// How each entry of a durable queue (mailbox notifications, async results) is retried: on its
/// own backoff, so a few failing entries never hold up the rest, until it becomes a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRetry {
    pub backoff: Backoff,
    pub max_attempts: u32,
}

impl EntryRetry {
    /// After `attempts` failed attempts (the latest included): when to try again (Unix ms), or
    /// `None` when the entry is a dead letter.
    pub fn next_attempt(&self, attempts: i64, now_ms: i64) -> Option<i64> {
        if attempts >= i64::from(self.max_attempts) {
            return None;
        }
        let retry = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        let delay = self.backoff.delay_at_least_base(retry);
        Some(now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// The round's verdict after a batch of a durable queue: more at once when the batch was full,
/// else a sleep until the next entry is due, else idle.
pub fn after_batch(batch_was_full: bool, next_due_ms: Option<i64>, now_ms: i64) -> Round {
    match (batch_was_full, next_due_ms) {
        (true, _) => Round::More,
        (false, Some(due)) => {
            let wait = u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0);
            Round::Sleep(Duration::from_millis(wait.max(1)))
        }
        (false, None) => Round::Idle,
    }
}

/// How a worker's loop waits between rounds.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// After an idle round, run again after this long even if nobody woke the worker.
    pub idle: Option<Duration>,
    /// After failed rounds.
    pub backoff: Backoff,
}

/// Becomes true once; every loop watches it.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Tells every [`Shutdown`] made with it to stop.
#[derive(Debug)]
pub struct ShutdownSender(watch::Sender<bool>);

pub fn shutdown_channel() -> (ShutdownSender, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownSender(sender), Shutdown(receiver))
}

impl ShutdownSender {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Completes once shutdown was asked for (at once if it already was).
    pub async fn wait(&mut self) {
        // A dropped sender also means stop: nobody is left to keep the loops running for.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// How long a round under way may still run once shutdown is asked for.
pub const ROUND_DRAIN: Duration = Duration::from_secs(3);

/// Runs `worker` in rounds until `shutdown`; `wake` starts the next round early when idle.
pub fn spawn(worker: Arc<dyn Worker>, wake: Arc<Notify>, pace: Pace, mut shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let mut round = worker.round();
            let round = tokio::select! {
                round = &mut round => round,
                () = shutdown.wait() => {
                    let _ = tokio::time::timeout(ROUND_DRAIN, round).await;
                    return;
                }
            };
            let wait = async {
                match round {
                    Round::More => {
                        failures = 0;
                        tokio::task::yield_now().await;
                    }
                    Round::Idle => {
                        failures = 0;
                        match pace.idle {
                            Some(idle) => {
                                let _ = tokio::time::timeout(idle, wake.notified()).await;
                            }
                            None => wake.notified().await,
                        }
                    }
                    Round::Failed => {
                        tokio::time::sleep(pace.backoff.delay(failures)).await;
                        failures = failures.saturating_add(1);
                    }
                    Round::Sleep(due_in) => {
                        failures = 0;
                        let wait = pace.idle.map_or(due_in, |idle| idle.min(due_in));
                        let _ = tokio::time::timeout(wait, wake.notified()).await;
                    }
                }
            };
            tokio::select! {
                () = wait => {}
                () = shutdown.wait() => return,
            }
        }
    })
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining requests");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Plays a script of rounds, then stays idle; counts rounds.
    struct Scripted {
        script: Mutex<Vec<Round>>,
        rounds: AtomicU32,
    }

    impl Worker for Scripted {
        fn round(&self) -> BoxFuture<'_, Round> {
            Box::pin(async move {
                self.rounds.fetch_add(1, Ordering::SeqCst);
                let mut script = self.script.lock().unwrap();
                if script.is_empty() { Round::Idle } else { script.remove(0) }
            })
        }
    }

    fn scripted(script: Vec<Round>) -> Arc<Scripted> {
        Arc::new(Scripted { script: Mutex::new(script), rounds: AtomicU32::new(0) })
    }

    const PACE: Pace =
        Pace { idle: None, backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(8) } };

    #[tokio::test(start_paused = true)]
    async fn more_runs_at_once_failed_backs_off_and_idle_waits_for_a_wake() {
        let worker = scripted(vec![Round::More, Round::More, Round::Failed, Round::Failed]);
        let wake = Arc::new(Notify::new());
        let (stop, shutdown) = shutdown_channel();
        let task = spawn(worker.clone(), Arc::clone(&wake), PACE, shutdown);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let rounds = worker.rounds.load(Ordering::SeqCst);
        assert!(rounds >= 3, "two More rounds ran back to back, then a failure");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(worker.rounds.load(Ordering::SeqCst) >= 4, "the first retry comes within the base delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(worker.rounds.load(Ordering::SeqCst), 5, "the second within twice the base; now idle");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(worker.rounds.load(Ordering::SeqCst), 5, "idle without a timer waits for a wake");
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(worker.rounds.load(Ordering::SeqCst), 6);
        stop.stop();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timer_runs_a_round_and_shutdown_stops_a_backoff() {
        let mut script = vec![Round::Idle];
        script.extend([Round::Failed; 100]);
        let worker = scripted(script);
        let pace = Pace { idle: Some(Duration::from_secs(60)), ..PACE };
        let (stop, shutdown) = shutdown_channel();
        let task = spawn(worker.clone(), Arc::new(Notify::new()), pace, shutdown);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(worker.rounds.load(Ordering::SeqCst), 1, "idle until the timer");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(worker.rounds.load(Ordering::SeqCst) >= 2, "the idle timer fired");
        stop.stop();
        tokio::time::timeout(Duration::from_millis(10), task).await.expect("stopped during the backoff").unwrap();
        assert!(worker.rounds.load(Ordering::SeqCst) < 100, "failed rounds were paced, not spun");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        for retry in 0..40 {
            let delay = backoff.delay(retry);
            assert!(delay <= backoff.ceiling(retry));
            assert!(delay <= Duration::from_secs(1));
        }
        assert_eq!(backoff.ceiling(2), Duration::from_millis(400));
        assert_eq!(backoff.ceiling(30), Duration::from_secs(1));
    }
}
