//! Full-text search over the classic archive's content: exact substring semantics, Chinese
//! included, newest first.
//!
//! The store is the truth; the index ([`index`], on Tantivy) follows the store's change feed
//! ([`SearchStore`]) and can always be rebuilt from it. A query runs in three steps: the index
//! finds the newest candidates (n-gram phrases, exact filters, keyset order), each candidate is
//! verified against its stored text with the one definition of a hit ([`Terms::matches`]), and
//! the hits get their snippets. The answer is exactly what a substring scan of the store would
//! give, in the same order.

pub mod index;
mod normalize;
pub mod query;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::sync::{Notify, watch};

pub use self::index::Applied;
use self::index::{CandidateQuery, IndexDoc, TextIndex, TextWriter};
pub use self::normalize::normalize;
pub use self::query::{QueryError, Terms};
pub use self::text::searchable_text;
use crate::background::{Round, Worker, logged};
use crate::domain::BoxFuture;
use crate::store::{SearchChange, SearchMark, SearchStore, StoreError, blocking};

/// Feed rows read per step of catching up.
const BATCH: usize = 4096;
/// Rows applied between commits while far behind (a commit is a durable point, and costs).
const COMMIT_EVERY: usize = 65_536;
/// The longest a caught-up indexer keeps applied rows uncommitted (unless a search waits).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Candidates fetched beyond what a page needs, in case some fail verification.
const SLACK: usize = 8;
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(String),
    #[error("search index at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the search index is held by another process (a running service); stop it first")]
    InUse,
    #[error("no search index at {0} yet (the service builds it; or run `wecom-zone reindex`)")]
    Missing(PathBuf),
    #[error("this process does not write the search index")]
    ReadOnly,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("not a cursor this service issued")]
    Cursor,
}

/// Where a page ends: the last hit's `(msgtime, record_id)`; the next page starts strictly after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub msgtime: i64,
    pub record_id: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("s:{}:{}", self.msgtime, self.record_id))
    }

    pub fn decode(text: &str) -> Result<Cursor, SearchError> {
        let decoded = URL_SAFE_NO_PAD.decode(text).map_err(|_| SearchError::Cursor)?;
        let text = String::from_utf8(decoded).map_err(|_| SearchError::Cursor)?;
        let (msgtime, record_id) =
            text.strip_prefix("s:").and_then(|rest| rest.split_once(':')).ok_or(SearchError::Cursor)?;
        Ok(Cursor {
            msgtime: msgtime.parse().map_err(|_| SearchError::Cursor)?,
            record_id: record_id.parse().map_err(|_| SearchError::Cursor)?,
        })
    }
}

/// A search, validated.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub corp_id: String,
    pub terms: Terms,
    pub userid: Option<String>,
    pub roomid: Option<String>,
    /// WeCom's msgtype string.
    pub msgtype: Option<String>,
    /// Unix seconds, inclusive.
    pub begin_time: Option<i64>,
    pub end_time: Option<i64>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// One hit: the message's metadata, its snippet, and whether a recall names it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub msgid: String,
    pub seq: u64,
    /// Milliseconds.
    pub msgtime: i64,
    pub from: String,
    pub tolist: Vec<String>,
    pub roomid: String,
    pub msgtype: String,
    pub snippet: String,
    pub recalled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub next_cursor: Option<Cursor>,
    pub has_more: bool,
}

/// The index and the store it follows. Every method blocks; call through [`blocking`].
pub struct Search {
    store: Arc<dyn SearchStore>,
    index: TextIndex,
    /// Present when this process writes the index (the service; `reindex`).
    writer: Mutex<Option<TextWriter>>,
    applied: watch::Sender<SearchMark>,
    /// Wakes the indexer (a search that wants it current).
    wake: Arc<Notify>,
    /// A search waits: commit as soon as caught up.
    wanted: AtomicBool,
    /// Whether `writer` holds one: read from async code, which must never wait for the writer's
    /// lock (held across IO by a catching-up step).
    writable: AtomicBool,
    path: PathBuf,
}

impl Search {
    /// Opens the index at `path`; with `write`, takes its writer (refused while another process
    /// holds it: [`SearchError::InUse`]).
    pub fn open(path: &Path, store: Arc<dyn SearchStore>, write: bool) -> Result<Search, SearchError> {
        let index = TextIndex::open(path, write)?;
        let writer = match write {
            true => {
                let mut writer = index.writer()?;
                if writer.adopt(&store.store_identity()?)? {
                    tracing::warn!(path = %path.display(), "the search index was built from another store; rebuilding it");
                }
                Some(writer)
            }
            false => None,
        };
        let applied = index.applied()?.mark;
        Ok(Search {
            store,
            index,
            writable: AtomicBool::new(writer.is_some()),
            writer: Mutex::new(writer),
            applied: watch::channel(applied).0,
            wake: Arc::new(Notify::new()),
            wanted: AtomicBool::new(false),
            path: path.to_path_buf(),
        })
    }

    /// Opens with the writer when it is free, else to read only.
    pub fn open_shared(path: &Path, store: Arc<dyn SearchStore>) -> Result<Search, SearchError> {
        match Search::open(path, Arc::clone(&store), true) {
            Err(SearchError::InUse) => Search::open(path, store, false),
            other => other,
        }
    }

    /// Shares `wake` (the ingest's content notifications) as the indexer's wake-up.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Search {
        self.wake = wake;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn writes(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
    }

    /// What the index has committed.
    pub fn applied(&self) -> Result<Applied, SearchError> {
        self.index.applied()
    }

    /// Feed rows the index has not applied yet.
    pub fn backlog(&self) -> Result<u64, SearchError> {
        Ok(self.store.search_backlog(self.index.applied()?.mark)?)
    }

    pub fn num_docs(&self) -> u64 {
        self.index.num_docs()
    }

    pub fn size_on_disk(&self) -> Result<u64, SearchError> {
        self.index.size_on_disk()
    }

    /// Wakes the indexer: something wants the index current.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<TextWriter>> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One step of following the feed (the service's indexer): applies up to [`BATCH`] rows and
    /// commits when [`COMMIT_EVERY`] rows wait, or when caught up and a search is waiting or
    /// [`COMMIT_INTERVAL`] has passed since the last commit. Commits are paced because each one
    /// writes segments that later merges rewrite: one per second is fresh enough for a reader
    /// and cheap for the pull beside it.
    pub fn catch_up_step(&self) -> Result<Step, SearchError> {
        self.step(false)
    }

    fn step(&self, commit_when_caught_up: bool) -> Result<Step, SearchError> {
        let mut guard = self.lock_writer();
        let writer = guard.as_mut().ok_or(SearchError::ReadOnly)?;
        let changes = self.store.search_changes(writer.applied().mark, BATCH)?;
        for change in &changes {
            apply(writer, change)?;
        }
        let more = changes.len() == BATCH;
        let since_commit = writer.since_commit();
        let due = writer.pending() >= COMMIT_EVERY
            || (!more
                && (commit_when_caught_up
                    || self.wanted.swap(false, Ordering::SeqCst)
                    || since_commit >= COMMIT_INTERVAL));
        let mut commit_in = None;
        if writer.pending() > 0 {
            if due {
                let mark = writer.commit()?;
                self.index.reload()?;
                self.applied.send_replace(mark);
            } else if !more {
                commit_in = Some(COMMIT_INTERVAL.saturating_sub(since_commit));
            }
        }
        Ok(Step { applied: changes.len(), more, commit_in })
    }

    /// Applies every feed row not yet applied, and commits; answers how many.
    pub fn catch_up(&self) -> Result<u64, SearchError> {
        let mut applied = 0;
        loop {
            let step = self.step(true)?;
            applied += step.applied as u64;
            if !step.more {
                return Ok(applied);
            }
        }
    }

    /// Rebuilds the index from nothing: every document goes and the whole feed is applied again,
    /// then the writer is released. The old documents stay visible until the rebuild's first
    /// commit; a crash part-way leaves an index that resumes where the rebuild got to. `progress`
    /// hears (rows applied, rows in all). Answers the documents in the rebuilt index.
    pub fn rebuild(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64, SearchError> {
        let total = self.store.search_backlog(SearchMark::default())?;
        self.lock_writer().as_mut().ok_or(SearchError::ReadOnly)?.clear()?;
        let mut done = 0u64;
        loop {
            let step = self.step(true)?;
            done += step.applied as u64;
            progress(done, total.max(done));
            if !step.more {
                break;
            }
        }
        self.settle()?;
        Ok(self.index.num_docs())
    }

    /// Releases the writer once its background merges are done, so the index is compact.
    pub fn settle(&self) -> Result<(), SearchError> {
        if let Some(writer) = self.lock_writer().take() {
            self.writable.store(false, Ordering::SeqCst);
            writer.finish_merges()?;
        }
        self.index.reload()
    }

    /// Waits (up to `timeout`) until the index has applied everything the store held when called;
    /// answers whether it has. Only a process that writes the index ever catches up.
    pub async fn wait_current(self: &Arc<Self>, timeout: Duration) -> Result<bool, SearchError> {
        let search = Arc::clone(self);
        let head = blocking(move || Ok::<_, SearchError>(search.store.search_head()?)).await?;
        let mut applied = self.applied.subscribe();
        if *applied.borrow() >= head {
            return Ok(true);
        }
        if !self.writes() {
            return Ok(false);
        }
        self.wanted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|mark| *mark >= head)).await;
        Ok(matches!(reached, Ok(Ok(_))))
    }

    /// A page of hits, newest first (by msgtime, then record).
    pub fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let msgtime_range = (
            request.begin_time.map_or(i64::MIN, |begin| begin.saturating_mul(1000)),
            request.end_time.map_or(i64::MAX, |end| end.saturating_mul(1000).saturating_add(999)),
        );
        let mut before = request.cursor.map(|cursor| (cursor.msgtime, cursor.record_id));
        let mut hits: Vec<(Cursor, SearchHit)> = Vec::new();
        loop {
            let want = request.limit + 1 - hits.len() + SLACK;
            let candidates = self.index.candidates(&CandidateQuery {
                corp_id: &request.corp_id,
                terms: request.terms.as_slice(),
                userid: request.userid.as_deref(),
                roomid: request.roomid.as_deref(),
                msgtype: request.msgtype.as_deref(),
                msgtime_range,
                before,
                limit: want,
            })?;
            let ids: Vec<i64> = candidates.iter().map(|&(_, id)| id).collect();
            let rows = self.store.search_rows(&request.corp_id, &ids)?;
            for &(msgtime, record_id) in &candidates {
                let Some(row) = rows.iter().find(|row| row.record_id == record_id) else { continue };
                if let Some(hit) = verified_hit(&request.terms, row) {
                    hits.push((Cursor { msgtime, record_id }, hit));
                    if hits.len() > request.limit {
                        break;
                    }
                }
            }
            if hits.len() > request.limit || candidates.len() < want {
                break;
            }
            before = candidates.last().copied();
        }
        let has_more = hits.len() > request.limit;
        hits.truncate(request.limit);
        let next_cursor = hits.last().map(|(cursor, _)| *cursor).or(request.cursor);
        Ok(SearchPage { hits: hits.into_iter().map(|(_, hit)| hit).collect(), next_cursor, has_more })
    }
}

/// The hit for `row`, when its stored text really contains every term.
fn verified_hit(terms: &Terms, row: &crate::store::SearchRow) -> Option<SearchHit> {
    let message: Value = serde_json::from_str(row.content.as_deref()?).ok()?;
    let text = searchable_text(&message);
    if !terms.matches(&text) {
        return None;
    }
    let string = |key: &str| message.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let tolist = message
        .get("tolist")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Some(SearchHit {
        msgid: row.msgid.clone(),
        seq: row.seq,
        msgtime: row.msgtime,
        from: string("from"),
        tolist,
        roomid: string("roomid"),
        msgtype: row.msgtype.clone(),
        snippet: terms.snippet(&text),
        recalled: row.recalled,
    })
}

/// Applies one feed row to the writer.
fn apply(writer: &mut TextWriter, change: &SearchChange) -> Result<(), SearchError> {
    let message: Option<Value> = change.content.as_deref().and_then(|content| serde_json::from_str(content).ok());
    let Some(message) = message else { return writer.apply(change.mark, None) };
    let text = normalize(&searchable_text(&message));
    if text.trim().is_empty() {
        return writer.apply(change.mark, None);
    }
    let string = |key: &str| message.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut parties = vec![string("from")];
    if let Some(ids) = message.get("tolist").and_then(Value::as_array) {
        parties.extend(ids.iter().filter_map(Value::as_str));
    }
    parties.retain(|party| !party.is_empty());
    let doc = IndexDoc {
        record_id: change.mark.record_id,
        corp_id: &change.corp_id,
        msgtime: change.msgtime,
        msgtype: &change.msgtype,
        parties,
        roomid: string("roomid"),
        text,
    };
    writer.apply(change.mark, Some(doc))
}

/// What one step of catching up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub applied: usize,
    /// More rows wait.
    pub more: bool,
    /// Applied rows wait for a commit due this long from now.
    pub commit_in: Option<Duration>,
}

/// The background indexer: follows the change feed while the service runs.
pub struct Indexer {
    search: Arc<Search>,
}

impl Indexer {
    pub fn new(search: Arc<Search>) -> Indexer {
        Indexer { search }
    }
}

impl Worker for Indexer {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move {
            let search = Arc::clone(&self.search);
            let step = blocking(move || search.catch_up_step()).await;
            let round = step.map(|step| match (step.more, step.commit_in) {
                (true, _) => Round::More,
                (false, Some(due)) => Round::Sleep(due),
                (false, None) => Round::Idle,
            });
            logged("search indexer", round)
        })
    }
}
