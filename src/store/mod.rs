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
    #[error("the database schema is version {found}, newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
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
}
