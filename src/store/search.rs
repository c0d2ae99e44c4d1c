//! What the full-text index reads from the store, which stays the truth: a change feed of archive
//! content and the rows behind search hits.
//!
//! Every write of a record's archive content gives the row a new `search_rev`, one higher than any
//! before it, inside the write's transaction. Writers are serialised, so revisions appear in
//! commit order: an index that has applied every row up to a [`SearchMark`] catches up by reading
//! the rows after it, and a row changed again later is simply read again at its new revision.

use super::StoreError;

/// A position in the change feed: rows are ordered by `(rev, record_id)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SearchMark {
    pub rev: i64,
    pub record_id: i64,
}

/// A record's current archive content, as the index takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchChange {
    pub mark: SearchMark,
    pub corp_id: String,
    pub msgtime: i64,
    pub msgtype: String,
    /// The decrypted message object, when its content status is `ok`; otherwise the record has
    /// nothing to search and leaves the index.
    pub content: Option<String>,
}

/// The stored row behind a search hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRow {
    pub record_id: i64,
    pub msgid: String,
    pub seq: u64,
    pub msgtime: i64,
    pub msgtype: String,
    pub content: Option<String>,
    /// A `recall` record names this message as its `pre_msgid`.
    pub recalled: bool,
}

pub trait SearchStore: Send + Sync + 'static {
    /// Random, fixed when the database was created: an index built from another store (a
    /// database replaced under a kept index) is recognised and rebuilt.
    fn store_identity(&self) -> Result<String, StoreError>;

    /// Up to `limit` rows after `after`, in feed order.
    fn search_changes(&self, after: SearchMark, limit: usize) -> Result<Vec<SearchChange>, StoreError>;

    /// The newest position in the feed (the default when there is no archive content).
    fn search_head(&self) -> Result<SearchMark, StoreError>;

    /// How many rows are after `after`.
    fn search_backlog(&self, after: SearchMark) -> Result<u64, StoreError>;

    /// The rows of `record_ids` in `corp_id` (missing ids are left out), in no particular order.
    fn search_rows(&self, corp_id: &str, record_ids: &[i64]) -> Result<Vec<SearchRow>, StoreError>;
}
