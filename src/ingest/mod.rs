//! Chat-record ingest: pull pages by cursor, decrypt every record's key, commit page + cursor
//! together.
//!
//! A pull is a three-stage pipeline so that the RSA pool never waits on the network or the disk:
//! the fetcher asks for page n+1 while page n is being decrypted, and page n-1 is being committed.
//! Commits happen strictly in page order, each with the cursor that follows its page, so stopping
//! the pipeline anywhere (error, shutdown, SIGKILL) leaves a consistent store.

mod archive;
mod records;
mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

pub use archive::{ArchivePull, ArchiveSource, MAX_CONTENT_ATTEMPTS};
pub use records::to_record;
pub use scheduler::{PullListener, PullScheduler};

use crate::crypto::{KeyRing, SecretKeyError};
use crate::domain::{CorpId, DecryptStatus, unix_now};
use crate::metrics::Metrics;
use crate::store::{NewRecord, PageCommit, RecordStore, StoreError, blocking};
use crate::upstream::{SyncMsgRequest, SyncMsgResponse, UpstreamClient, UpstreamError};

/// Records recovered per batch when a key version appears.
const RECOVERY_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no configuration for corp {0}")]
    UnknownCorp(String),
    #[error("pull failed upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("a worker stopped unexpectedly")]
    WorkerLost,
    /// WeCom kept saying `has_more` without moving the cursor: the pull stops (and is retried
    /// later with backoff) instead of asking for the same page forever.
    #[error("sync_msg said has_more {0} times without moving the cursor")]
    CursorStuck(u32),
    #[error("finance SDK: {0}")]
    Finance(#[from] crate::finance::FinanceError),
    /// GetChatData answered with this WeCom errcode.
    #[error("GetChatData answered errcode {0}")]
    Archive(i64),
    #[error("the stored seq is not a number")]
    BadSeq,
}

impl IngestError {
    /// The SDK's or WeCom's code behind a failed classic archive pull, for `ingest_status`.
    pub fn archive_code(&self) -> Option<i64> {
        match self {
            IngestError::Finance(error) => error.sdk_code().map(i64::from),
            IngestError::Archive(code) => Some(*code),
            _ => None,
        }
    }
}

/// How many answers in a row may say `has_more` without moving the cursor.
const MAX_UNMOVED_PAGES: u32 = 3;

/// What one pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullSummary {
    pub pages: usize,
    pub inserted: usize,
    pub duplicates: usize,
    /// Records stored without a secret key.
    pub key_failures: usize,
    /// Oldest and newest `send_time` among the pulled records.
    pub time_range: Option<(i64, i64)>,
}

/// A page as fetched, before decryption.
struct FetchedPage {
    cursor_in: Option<String>,
    cursor_out: String,
    items: Vec<Box<RawValue>>,
}

/// A page handed to the RSA pool; `converted` completes when every record is decrypted.
struct PendingPage {
    cursor_in: Option<String>,
    cursor_out: String,
    converted: oneshot::Receiver<Vec<(NewRecord, Option<SecretKeyError>)>>,
}

/// Pages queued on the RSA pool at once. Two keep the pool busy while one page's stragglers
/// finish and the next page is handed over.
const PAGES_IN_FLIGHT: usize = 2;

pub struct Ingestor {
    store: Arc<dyn RecordStore>,
    upstream: UpstreamClient,
    rings: HashMap<CorpId, Arc<KeyRing>>,
    pool: Arc<rayon::ThreadPool>,
    page_limit: u32,
    metrics: Arc<Metrics>,
    /// The classic archive's corps, pulled through the finance SDK instead of `sync_msg`.
    archive: Option<Arc<ArchiveSource>>,
}

impl Ingestor {
    pub fn new(
        store: Arc<dyn RecordStore>,
        upstream: UpstreamClient,
        rings: HashMap<CorpId, Arc<KeyRing>>,
        pool: Arc<rayon::ThreadPool>,
        page_limit: u32,
        metrics: Arc<Metrics>,
    ) -> Ingestor {
        Ingestor { store, upstream, rings, pool, page_limit, metrics, archive: None }
    }

    /// The classic archive's source, when any corp uses it.
    pub fn archive_source(&self) -> Option<&Arc<ArchiveSource>> {
        self.archive.as_ref()
    }

    /// Notified when classic content queued media files; `None` without classic corps.
    pub fn media_wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.archive.as_ref().map(|source| source.media_wake())
    }

    /// Notified after every commit of classic archive content (the search indexer waits on it).
    pub fn content_wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.archive.as_ref().map(|source| source.content_wake())
    }

    /// Pulls the corps `archive` serves through the finance SDK.
    pub fn with_archive(mut self, archive: Arc<ArchiveSource>) -> Ingestor {
        self.archive = Some(archive);
        self
    }

    /// The classic archive's pull for `corp_id`, when it is one of those corps.
    fn archive_pull(&self, corp_id: &str) -> Option<Result<ArchivePull<'_>, IngestError>> {
        let source = self.archive.as_deref().filter(|source| source.serves(corp_id))?;
        Some(
            self.rings
                .get(corp_id)
                .cloned()
                .map(|ring| ArchivePull { source, store: &self.store, ring, pool: &self.pool, metrics: &self.metrics })
                .ok_or_else(|| IngestError::UnknownCorp(corp_id.to_owned())),
        )
    }

    /// Pulls from the stored cursor until WeCom says there is no more, committing page by page.
    pub async fn pull(&self, corp_id: &str, token: Option<String>) -> Result<PullSummary, IngestError> {
        if let Some(archive) = self.archive_pull(corp_id) {
            let archive = archive?;
            let summary = archive.pull(corp_id).await?;
            archive.retry_content(corp_id, false).await?;
            let store = Arc::clone(&self.store);
            let owned_corp = corp_id.to_owned();
            blocking(move || store.record_pull(&owned_corp, unix_now())).await?;
            return Ok(summary);
        }
        let ring = self.rings.get(corp_id).cloned().ok_or_else(|| IngestError::UnknownCorp(corp_id.to_owned()))?;
        let store = Arc::clone(&self.store);
        let owned_corp = corp_id.to_owned();
        let cursor = blocking(move || store.cursor(&owned_corp)).await?;
        let (fetched_tx, fetched_rx) = mpsc::channel(1);
        let (ready_tx, ready_rx) = mpsc::channel(PAGES_IN_FLIGHT);
        let (fetched, decrypted, committed) = tokio::join!(
            self.fetch_pages(corp_id, cursor, token, fetched_tx),
            self.decrypt_pages(ring, fetched_rx, ready_tx),
            self.commit_pages(corp_id, ready_rx),
        );
        let summary = committed?;
        decrypted?;
        fetched?;
        let store = Arc::clone(&self.store);
        let owned_corp = corp_id.to_owned();
        blocking(move || store.record_pull(&owned_corp, unix_now())).await?;
        Ok(summary)
    }

    async fn fetch_pages(
        &self,
        corp_id: &str,
        mut cursor: Option<String>,
        token: Option<String>,
        pages: mpsc::Sender<FetchedPage>,
    ) -> Result<(), IngestError> {
        let mut unmoved = 0;
        loop {
            let request = SyncMsgRequest { cursor: cursor.as_deref(), token: token.as_deref(), limit: self.page_limit };
            let answer: SyncMsgResponse = self.upstream.invoke(corp_id, "sync_msg", &request).await?;
            let cursor_out = if answer.next_cursor.is_empty() { cursor.clone() } else { Some(answer.next_cursor) };
            let moved = cursor_out != cursor;
            let has_items = !answer.msg_list.is_empty();
            if let Some(cursor_out) = cursor_out.clone().filter(|_| moved || has_items) {
                let page = FetchedPage { cursor_in: cursor.clone(), cursor_out, items: answer.msg_list };
                if pages.send(page).await.is_err() {
                    return Ok(()); // a later stage stopped; it reports why
                }
            }
            if !answer.has_more {
                return Ok(());
            }
            unmoved = if moved { 0 } else { unmoved + 1 };
            if unmoved >= MAX_UNMOVED_PAGES {
                return Err(IngestError::CursorStuck(unmoved));
            }
            cursor = cursor_out;
        }
    }

    /// Hands each fetched page to the RSA pool without waiting for it: the commit stage awaits the
    /// pages in order, so several can be decrypting at once.
    async fn decrypt_pages(
        &self,
        ring: Arc<KeyRing>,
        mut pages: mpsc::Receiver<FetchedPage>,
        pending: mpsc::Sender<PendingPage>,
    ) -> Result<(), IngestError> {
        while let Some(page) = pages.recv().await {
            let ring = Arc::clone(&ring);
            let items = page.items;
            let (done_tx, done_rx) = oneshot::channel();
            self.pool.spawn(move || {
                use rayon::prelude::*;
                let converted: Vec<_> = items.par_iter().map(|raw| to_record(raw, &ring)).collect();
                let _ = done_tx.send(converted);
            });
            let handed_over =
                PendingPage { cursor_in: page.cursor_in, cursor_out: page.cursor_out, converted: done_rx };
            if pending.send(handed_over).await.is_err() {
                return Ok(()); // the commit stage stopped; it reports why
            }
        }
        Ok(())
    }

    async fn commit_pages(
        &self,
        corp_id: &str,
        mut pages: mpsc::Receiver<PendingPage>,
    ) -> Result<PullSummary, IngestError> {
        let mut summary = PullSummary::default();
        while let Some(page) = pages.recv().await {
            let converted = page.converted.await.map_err(|_| IngestError::WorkerLost)?;
            let mut key_failures = Vec::new();
            let mut records = Vec::with_capacity(converted.len());
            for (record, failure) in converted {
                if let Some(error) = failure {
                    key_failures.push((error, record.public_key_ver));
                }
                records.push(record);
            }
            let commit = PageCommit {
                corp_id: corp_id.to_owned(),
                cursor_in: page.cursor_in,
                cursor_out: page.cursor_out,
                records,
            };
            let store = Arc::clone(&self.store);
            let (outcome, commit) =
                blocking(move || store.commit_page(&commit).map(|outcome| (outcome, commit))).await?;
            self.metrics.page_committed(corp_id, outcome.inserted, outcome.duplicates);
            for (error, version) in &key_failures {
                self.metrics.secret_key_failure(corp_id, error.status().as_str(), *version);
            }
            summary.pages += 1;
            summary.inserted += outcome.inserted;
            summary.duplicates += outcome.duplicates;
            summary.key_failures += key_failures.len();
            for record in &commit.records {
                let (low, high) = summary.time_range.unwrap_or((record.send_time, record.send_time));
                summary.time_range = Some((low.min(record.send_time), high.max(record.send_time)));
            }
            if let Some((_, newest)) = summary.time_range {
                self.metrics.cursor_lag(corp_id, unix_now().saturating_sub(newest));
            }
        }
        Ok(summary)
    }

    /// Decrypts stored records whose key version had no private key before. Run at start-up.
    pub async fn recover_keys(&self, corp_id: &str) -> Result<usize, IngestError> {
        if let Some(archive) = self.archive_pull(corp_id) {
            return archive?.retry_content(corp_id, true).await;
        }
        let ring = self.rings.get(corp_id).cloned().ok_or_else(|| IngestError::UnknownCorp(corp_id.to_owned()))?;
        let mut recovered = 0;
        for version in ring.versions() {
            let mut after_id = 0;
            loop {
                let store = Arc::clone(&self.store);
                let owned_corp = corp_id.to_owned();
                let pending =
                    blocking(move || store.pending_keys(&owned_corp, version, after_id, RECOVERY_BATCH)).await?;
                let Some(last) = pending.last() else { break };
                after_id = last.id;
                let ring = Arc::clone(&ring);
                let (done_tx, done_rx) = oneshot::channel();
                self.pool.spawn(move || {
                    use rayon::prelude::*;
                    let updates: Vec<(i64, Result<String, DecryptStatus>)> = pending
                        .par_iter()
                        .map(|row| {
                            let outcome = ring.decrypt_secret_key(version, &row.encrypted_secret_key);
                            (row.id, outcome.map_err(|error| error.status()))
                        })
                        .collect();
                    let _ = done_tx.send(updates);
                });
                let updates = done_rx.await.map_err(|_| IngestError::WorkerLost)?;
                let ok = updates.iter().filter(|(_, outcome)| outcome.is_ok()).count();
                let store = Arc::clone(&self.store);
                blocking(move || store.set_secret_keys(&updates)).await?;
                recovered += ok;
            }
        }
        if recovered > 0 {
            self.metrics.secret_keys_recovered(corp_id, recovered);
            tracing::info!(
                corp_id,
                recovered,
                "secret keys decrypted for records stored before their key was configured"
            );
        }
        Ok(recovered)
    }
}
