//! When to pull: one background worker per corp (see `background`), which recovers keys and
//! catches up at start-up, then pulls when woken by events (`conversation_new_message`,
//! `msgaudit_notify`) and on a periodic safety poll.
//!
//! One pull runs at a time per corp. Triggers that arrive during a pull coalesce into exactly one
//! more pull (a `Notify` holds at most one permit), which starts from the cursor the first pull
//! committed. A failed pull is retried with backoff; nothing is skipped, because the cursor only
//! moves with committed pages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Ingestor, PullSummary};
use crate::background::{self, Pace, Round, Shutdown, Worker};
use crate::domain::{BoxFuture, CorpId};
use crate::metrics::Metrics;
use crate::store::{StoreError, blocking};

/// Told when a pull succeeded, with the mailbox entries that were waiting for it; also asked, at
/// start-up, which entries were still waiting when the process stopped. Both block (storage):
/// the scheduler calls them through `store::blocking`.
pub trait PullListener: Send + Sync + 'static {
    fn pull_finished(&self, corp_id: &CorpId, entries: &[i64]);
    fn awaiting_pull(&self, corp_id: &CorpId) -> Vec<i64>;
}

struct Trigger {
    wake: Arc<Notify>,
    /// The newest `conversation_new_message` token, used by the next pull (valid 10 minutes).
    token: Mutex<Option<String>>,
    /// Mailbox entries waiting for the next successful pull's summary.
    waiting: Mutex<Vec<i64>>,
}

pub struct PullScheduler {
    triggers: HashMap<CorpId, Arc<Trigger>>,
}

/// One corp's puller: a background worker.
struct CorpPuller {
    ingestor: Arc<Ingestor>,
    corp_id: CorpId,
    trigger: Arc<Trigger>,
    listener: Arc<dyn PullListener>,
    metrics: Arc<Metrics>,
    started: AtomicBool,
}

impl PullScheduler {
    /// Spawns one worker per corp; they stop at `shutdown`.
    pub fn start(
        ingestor: Arc<Ingestor>,
        corps: &[CorpId],
        pace: Pace,
        listener: Arc<dyn PullListener>,
        metrics: Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> (Arc<PullScheduler>, Vec<JoinHandle<()>>) {
        let mut triggers = HashMap::new();
        let mut tasks = Vec::new();
        for corp_id in corps {
            let trigger = Arc::new(Trigger {
                wake: Arc::new(Notify::new()),
                token: Mutex::new(None),
                waiting: Mutex::new(Vec::new()),
            });
            triggers.insert(corp_id.clone(), Arc::clone(&trigger));
            let puller = CorpPuller {
                ingestor: Arc::clone(&ingestor),
                corp_id: corp_id.clone(),
                trigger: Arc::clone(&trigger),
                listener: Arc::clone(&listener),
                metrics: Arc::clone(&metrics),
                started: AtomicBool::new(false),
            };
            tasks.push(background::spawn(Arc::new(puller), Arc::clone(&trigger.wake), pace, shutdown.clone()));
        }
        (Arc::new(PullScheduler { triggers }), tasks)
    }

    /// Asks for a pull of `corp_id`, optionally on behalf of a mailbox entry that wants its
    /// summary; returns false for an unknown corp.
    pub fn trigger(&self, corp_id: &CorpId, token: Option<String>, mailbox_entry: Option<i64>) -> bool {
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

impl Worker for CorpPuller {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move {
            if !self.started.swap(true, Ordering::SeqCst) {
                self.start_up().await;
            }
            self.pull().await
        })
    }
}

impl CorpPuller {
    /// Decrypts what waited for a key, and picks up the mailbox entries that were waiting for a
    /// pull when the process stopped.
    async fn start_up(&self) {
        if let Err(error) = self.ingestor.recover_keys(&self.corp_id).await {
            tracing::warn!(corp_id = %self.corp_id, %error, "recovering secret keys failed; retried at the next start");
        }
        let (listener, corp_id) = (Arc::clone(&self.listener), self.corp_id.clone());
        if let Ok(waiting) = blocking(move || Ok::<_, StoreError>(listener.awaiting_pull(&corp_id))).await {
            lock(&self.trigger.waiting).extend(waiting);
        }
    }

    async fn pull(&self) -> Round {
        let token = lock(&self.trigger.token).take();
        // Entries that arrive during this pull wait for the next one, which the trigger schedules.
        let waiting = std::mem::take(&mut *lock(&self.trigger.waiting));
        match self.ingestor.pull(&self.corp_id, token).await {
            Ok(summary) => {
                log_summary(&self.corp_id, &summary);
                if !waiting.is_empty() {
                    let (listener, corp_id) = (Arc::clone(&self.listener), self.corp_id.clone());
                    let _ = blocking(move || {
                        listener.pull_finished(&corp_id, &waiting);
                        Ok::<_, StoreError>(())
                    })
                    .await;
                }
                Round::Idle
            }
            Err(error) => {
                lock(&self.trigger.waiting).extend(waiting);
                self.metrics.pull_failure(&self.corp_id);
                tracing::warn!(corp_id = %self.corp_id, %error, "pull failed; retrying");
                Round::Failed
            }
        }
    }
}

fn log_summary(corp_id: &CorpId, summary: &PullSummary) {
    if summary.pages > 0 {
        tracing::info!(
            %corp_id,
            pages = summary.pages,
            inserted = summary.inserted,
            duplicates = summary.duplicates,
            key_failures = summary.key_failures,
            "pull finished"
        );
    } else {
        tracing::debug!(%corp_id, "pull found nothing new");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
