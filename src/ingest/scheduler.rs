//! When to pull: one loop per corp, started at start-up (key recovery, then a catch-up pull), woken
//! by events (`conversation_new_message`, `msgaudit_notify`) and by a periodic safety poll.
//!
//! One pull runs at a time per corp. Triggers that arrive during a pull coalesce into exactly one
//! more pull (a `Notify` holds at most one permit), which starts from the cursor the first pull
//! committed. A failed pull is retried after a delay; nothing is skipped, because the cursor only
//! moves with committed pages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{Ingestor, PullSummary};
use crate::metrics::Metrics;

struct Trigger {
    wake: Notify,
    /// The newest `conversation_new_message` token, used by the next pull (valid 10 minutes).
    token: Mutex<Option<String>>,
    /// Mailbox entries waiting for the next successful pull's summary.
    waiting: Mutex<Vec<i64>>,
}

/// Told when a pull succeeded, with the mailbox entries that were waiting for it.
pub trait PullListener: Send + Sync + 'static {
    fn pull_finished(&self, corp_id: &str, entries: &[i64]);
}

pub struct PullScheduler {
    triggers: HashMap<String, Arc<Trigger>>,
}

/// Timing of the per-corp loops.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub poll_interval: Option<Duration>,
    pub retry_delay: Duration,
}

impl PullScheduler {
    /// Spawns one loop per corp; they stop when `shutdown` becomes true.
    /// `corps` are `(corp_id, mailbox entries already waiting for a pull)`.
    pub fn start(
        ingestor: Arc<Ingestor>,
        corps: Vec<(String, Vec<i64>)>,
        schedule: Schedule,
        listener: Arc<dyn PullListener>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<PullScheduler>, Vec<JoinHandle<()>>) {
        let mut triggers = HashMap::new();
        let mut tasks = Vec::new();
        for (corp_id, waiting) in &corps {
            let trigger = Arc::new(Trigger {
                wake: Notify::new(),
                token: Mutex::new(None),
                waiting: Mutex::new(waiting.clone()),
            });
            triggers.insert(corp_id.clone(), Arc::clone(&trigger));
            tasks.push(tokio::spawn(run_corp(
                Arc::clone(&ingestor),
                corp_id.clone(),
                trigger,
                schedule,
                Arc::clone(&listener),
                Arc::clone(&metrics),
                shutdown.clone(),
            )));
        }
        (Arc::new(PullScheduler { triggers }), tasks)
    }

    /// Asks for a pull of `corp_id`, optionally on behalf of a mailbox entry that wants its
    /// summary; returns false for an unknown corp.
    pub fn trigger(&self, corp_id: &str, token: Option<String>, mailbox_entry: Option<i64>) -> bool {
        let Some(trigger) = self.triggers.get(corp_id) else { return false };
        if let Some(token) = token.filter(|token| !token.is_empty()) {
            *lock(&trigger.token) = Some(token);
        }
        if let Some(entry) = mailbox_entry {
            lock(&trigger.waiting).push(entry);
        }
        trigger.wake.notify_one();
        true
    }
}

async fn run_corp(
    ingestor: Arc<Ingestor>,
    corp_id: String,
    trigger: Arc<Trigger>,
    schedule: Schedule,
    listener: Arc<dyn PullListener>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = ingestor.recover_keys(&corp_id).await {
        tracing::warn!(corp_id, %error, "recovering secret keys failed; retried at the next start");
    }
    loop {
        let token = lock(&trigger.token).take();
        // Entries that arrive during this pull wait for the next one, which the trigger schedules.
        let waiting = std::mem::take(&mut *lock(&trigger.waiting));
        let outcome = tokio::select! {
            outcome = ingestor.pull(&corp_id, token) => outcome,
            _ = shutdown.changed() => return,
        };
        let pause = match outcome {
            Ok(summary) => {
                log_summary(&corp_id, &summary);
                if !waiting.is_empty() {
                    let listener = Arc::clone(&listener);
                    let corp_id = corp_id.clone();
                    // The listener writes to the store: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || listener.pull_finished(&corp_id, &waiting)).await;
                }
                None
            }
            Err(error) => {
                lock(&trigger.waiting).extend(waiting);
                metrics.pull_failure(&corp_id);
                tracing::warn!(corp_id, %error, "pull failed; retrying");
                Some(schedule.retry_delay)
            }
        };
        let wait_for_trigger = async {
            match pause {
                Some(delay) => tokio::time::sleep(delay).await,
                None => match schedule.poll_interval {
                    Some(interval) => {
                        let _ = tokio::time::timeout(interval, trigger.wake.notified()).await;
                    }
                    None => trigger.wake.notified().await,
                },
            }
        };
        tokio::select! {
            () = wait_for_trigger => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn log_summary(corp_id: &str, summary: &PullSummary) {
    if summary.pages > 0 {
        tracing::info!(
            corp_id,
            pages = summary.pages,
            inserted = summary.inserted,
            duplicates = summary.duplicates,
            key_failures = summary.key_failures,
            "pull finished"
        );
    } else {
        tracing::debug!(corp_id, "pull found nothing new");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
