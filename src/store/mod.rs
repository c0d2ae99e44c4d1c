//! Durable state behind the [`Store`] trait; `sqlite` is the only module that knows SQL.
//!
//! The central guarantee: a page of records, its ledger row and the cursor that follows it are
//! committed in ONE transaction ([`Store::commit_page`]). A crash before the commit loses the
//! page and the cursor together (the page is pulled again); a crash after it loses nothing. A
//! record's `msgid` is unique per corp, so a page delivered again changes nothing.

mod sqlite;

pub use sqlite::SqliteStore;

/// Why a storage operation failed. Messages carry no record content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot create the data folder {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("a storage worker stopped unexpectedly")]
    WorkerLost,
    #[error("the database schema is version {found}, newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
}

/// Runs storage work on Tokio's blocking pool: SQLite calls block and must not hold an async
/// worker. The one place callers hand work to the store from async code.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| StoreError::WorkerLost)?
}

/// The decryption status stored with every record.
pub const STATUS_OK: &str = "ok";

/// One chat record as stored: every field of the `sync_msg` item, the decrypted secret key (or
/// why there is none) and the item's raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub msgid: String,
    pub sender_type: i64,
    pub sender_id: String,
    /// `[{"type":1,"id":".."}]` as JSON text.
    pub receivers: String,
    pub chatid: Option<String>,
    /// The conversation: the group's chatid, or the sorted ids of a one-to-one chat joined by `|`.
    pub conversation: String,
    pub send_time: i64,
    pub msgtype: i64,
    pub public_key_ver: Option<u32>,
    pub encrypted_secret_key: Option<String>,
    pub secret_key: Option<String>,
    /// [`STATUS_OK`] or a `SecretKeyError::status()` value.
    pub decrypt_status: &'static str,
    pub call_duration: Option<i64>,
    /// The `sync_msg` item as received.
    pub raw: String,
}

/// A page as pulled, with the cursors around it.
#[derive(Debug, Clone)]
pub struct PageCommit {
    pub corp_id: String,
    pub cursor_in: Option<String>,
    pub cursor_out: String,
    pub records: Vec<NewRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageOutcome {
    /// Records new to the store.
    pub inserted: usize,
    /// Records already stored (a page pulled again after a crash, or a re-delivery).
    pub duplicates: usize,
}

/// A stored record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: i64,
    pub record: NewRecord,
    pub stored_at: i64,
}

/// A record waiting for a key: its row id and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    pub id: i64,
    pub encrypted_secret_key: String,
}

/// Per-corp ingest figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngestStatus {
    pub cursor: Option<String>,
    pub last_pull_at: Option<i64>,
    pub stored: i64,
    /// Records without a secret key, by status.
    pub failed: Vec<(String, i64)>,
    pub pages: i64,
    pub newest_send_time: Option<i64>,
}

/// Mailbox states: waiting for the pull an event started, waiting for `spec_notify_app` to
/// succeed, notified (fetchable until it expires).
pub const MAILBOX_AWAITING_PULL: &str = "awaiting_pull";
pub const MAILBOX_PENDING_NOTIFY: &str = "pending_notify";
pub const MAILBOX_NOTIFIED: &str = "notified";

/// An event or async result to keep for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailboxEntry {
    pub corp_id: String,
    /// Identifies the delivery that created it; a second delivery with the same key is a duplicate.
    pub delivery_key: Option<Vec<u8>>,
    /// The event type (or `async_result`).
    pub kind: String,
    pub notify_scene: u8,
    /// JSON text.
    pub payload: String,
    pub awaiting_pull: bool,
    /// The id announced with `spec_notify_app`, chosen before the announcement so that a fetch
    /// that races the announcement's answer already finds the entry.
    pub notify_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    pub id: i64,
    pub corp_id: String,
    pub kind: String,
    pub notify_scene: i64,
    pub payload: String,
    pub state: String,
    pub notify_id: Option<String>,
    pub created_at: i64,
    pub notified_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub notify_attempts: i64,
    pub fetch_count: i64,
}

/// What was stored after a mailbox entry was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredSince {
    pub records: i64,
    pub conversations: i64,
    pub begin_time: Option<i64>,
    pub end_time: Option<i64>,
    pub without_secret_key: i64,
}

/// Job states: waiting to run, result ready but not yet accepted by WeCom, delivered.
pub const JOB_PENDING: &str = "pending";
pub const JOB_DONE: &str = "done";
pub const JOB_DELIVERED: &str = "delivered";

/// An asynchronous ability call, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub corp_id: String,
    pub agent_id: i64,
    pub ability_id: String,
    pub notify_id: String,
    pub job_info: String,
    pub request_data: String,
    pub delivery_key: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub call: NewJob,
    pub state: String,
    pub errcode: Option<i64>,
    pub result: Option<String>,
    pub attempts: i64,
}

/// Filters of `list_messages`; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub chatid: Option<String>,
    pub userid: Option<String>,
    pub external_userid: Option<String>,
    pub msgtype: Option<i64>,
    pub begin_time: Option<i64>,
    pub end_time: Option<i64>,
    /// Only records stored after this row id (the paging cursor).
    pub after_id: i64,
    pub limit: usize,
}

/// One chat or one-to-one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub key: String,
    pub chatid: Option<String>,
    /// Sender and receivers of the newest message.
    pub participants: Vec<String>,
    pub last_send_time: i64,
    pub message_count: i64,
}

/// The storage seam. Blocking: call it from `spawn_blocking` or a dedicated thread.
pub trait Store: Send + Sync + 'static {
    /// The cursor to continue from, `None` before the first page.
    fn cursor(&self, corp_id: &str) -> Result<Option<String>, StoreError>;
    /// Records, ledger row and cursor in one transaction.
    fn commit_page(&self, page: &PageCommit) -> Result<PageOutcome, StoreError>;
    /// Notes that a pull finished (for `ingest_status`).
    fn record_pull(&self, corp_id: &str, at: i64) -> Result<(), StoreError>;
    /// Records of `version` still waiting for a key, after row `after_id`, oldest first.
    fn pending_keys(
        &self,
        corp_id: &str,
        version: u32,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingKey>, StoreError>;
    /// Stores late-decrypted secret keys (or a new failure status) by row id, in one transaction.
    fn set_secret_keys(&self, updates: &[(i64, Result<String, &'static str>)]) -> Result<(), StoreError>;
    fn record(&self, corp_id: &str, msgid: &str) -> Result<Option<StoredRecord>, StoreError>;
    fn ingest_status(&self, corp_id: &str) -> Result<IngestStatus, StoreError>;
    /// Liveness of the storage (for `/readyz`).
    fn check(&self) -> Result<(), StoreError>;

    /// Records matching `filter`, in storage order, at most `filter.limit`.
    fn list_messages(&self, corp_id: &str, filter: &MessageFilter) -> Result<Vec<StoredRecord>, StoreError>;
    /// Conversations ordered by key, after `after`, optionally only those `userid` takes part in.
    fn list_conversations(
        &self,
        corp_id: &str,
        userid: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// Keeps an entry; `None` when its delivery key was seen before (a duplicate delivery).
    fn mailbox_insert(&self, entry: &NewMailboxEntry, now: i64) -> Result<Option<i64>, StoreError>;
    /// Records of `corp_id` stored after entry `mailbox_id` was created (for its pull summary).
    fn stored_since(&self, corp_id: &str, mailbox_id: i64) -> Result<StoredSince, StoreError>;
    fn mailbox_awaiting_pull(&self, corp_id: &str) -> Result<Vec<i64>, StoreError>;
    fn mailbox_entry(&self, id: i64) -> Result<Option<MailboxEntry>, StoreError>;
    /// Replaces the payload of an entry whose pull finished and queues its notification.
    fn mailbox_finish_pull(&self, id: i64, payload: &str) -> Result<(), StoreError>;
    fn mailbox_pending_notifications(&self, limit: usize) -> Result<Vec<MailboxEntry>, StoreError>;
    fn mailbox_set_notified(&self, id: i64, notify_id: &str, now: i64, expires_at: i64) -> Result<(), StoreError>;
    fn mailbox_notify_failed(&self, id: i64) -> Result<(), StoreError>;
    /// An unexpired entry of `corp_id` whose pull (if any) has finished.
    fn mailbox_by_notify_id(
        &self,
        corp_id: &str,
        notify_id: &str,
        now: i64,
    ) -> Result<Option<MailboxEntry>, StoreError>;
    fn mailbox_record_fetch(&self, id: i64, page: u32, now: i64) -> Result<(), StoreError>;
    /// Deletes expired entries (and their fetch records); returns how many.
    fn mailbox_expire(&self, now: i64) -> Result<usize, StoreError>;

    /// Keeps an async call; `None` when its delivery key was seen before.
    fn job_insert(&self, job: &NewJob, now: i64) -> Result<Option<i64>, StoreError>;
    /// Jobs not yet delivered, oldest first.
    fn jobs_unfinished(&self) -> Result<Vec<Job>, StoreError>;
    fn job_set_result(&self, id: i64, errcode: i64, result: &str, now: i64) -> Result<(), StoreError>;
    fn job_delivery_attempt(&self, id: i64, delivered: bool, now: i64) -> Result<(), StoreError>;
}
