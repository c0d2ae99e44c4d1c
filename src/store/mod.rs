//! Durable state, one trait per aggregate: [`RecordStore`] (chat records, pages, cursors, and
//! the classic archive's content beside its records), [`MailboxStore`] (the notify_id mailbox),
//! [`JobStore`] (asynchronous calls), [`MediaStore`] (classic media downloads) and [`SearchStore`]
//! (the change feed the full-text index follows), plus
//! [`StoreHealth`] for readiness. `sqlite` is the only module that knows SQL; its one
//! [`SqliteStore`] implements every trait.
//!
//! The central guarantee: a page of records, its ledger row and the cursor that follows it are
//! committed in ONE transaction ([`RecordStore::commit_page`]). A crash before the commit loses the
//! page and the cursor together (the page is pulled again); a crash after it loses nothing. A
//! record's `msgid` is unique per corp, so a page delivered again changes nothing.
//!
//! Every method blocks. From async code, call them through [`blocking`], the one hand-off point.

mod jobs;
mod mailbox;
mod media;
mod records;
mod search;
mod sqlite;

pub use jobs::{Job, JobDelivery, JobStore, NewJob};
pub use mailbox::{MailboxEntry, MailboxStore, NewMailboxEntry, StoredSince};
pub use media::{MediaEntry, MediaOutcome, MediaStore};
pub use records::{
    ArchiveFields, ArchiveRetry, Conversation, IngestStatus, MessageFilter, NewRecord, PageCommit, PageOutcome,
    PendingKey, RecordStore, StoredRecord,
};
pub use search::{SearchChange, SearchMark, SearchRow, SearchStore};
pub use sqlite::{LikeQuery, SqliteStore};

use crate::domain::UnknownState;

/// Why a storage operation failed. Engine-neutral; messages carry no record content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("a storage worker stopped unexpectedly")]
    WorkerLost,
    #[error("the database schema is version {found}, newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored data is not understood: {0}")]
    Corrupt(#[from] UnknownState),
}

/// Liveness of the storage, for readiness.
pub trait StoreHealth: Send + Sync + 'static {
    fn check(&self) -> Result<(), StoreError>;
}

/// Runs storage work on Tokio's blocking pool: storage calls block and must not hold an async
/// worker. The one place async code hands work to the store (the layering test holds it to that).
/// Work that reads the store among other blocking work (the search index) keeps its own error
/// type.
pub async fn blocking<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(work).await.map_err(|_| E::from(StoreError::WorkerLost))?
}
