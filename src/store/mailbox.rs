//! The mailbox aggregate: events and async results kept for the application under a notify_id.

use super::StoreError;
use crate::domain::{CorpId, MailboxState, NotifyId};

/// An event or async result to keep for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailboxEntry {
    pub corp_id: CorpId,
    /// Identifies the delivery that created it; a second delivery with the same key is a duplicate.
    pub delivery_key: Option<Vec<u8>>,
    /// The event type as WeCom sent it (or `async_result`).
    pub kind: String,
    pub notify_scene: u8,
    /// JSON text.
    pub payload: String,
    pub awaiting_pull: bool,
    /// The id announced with `spec_notify_app`, chosen before the announcement so that a fetch
    /// that races the announcement's answer already finds the entry.
    pub notify_id: NotifyId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    pub id: i64,
    pub corp_id: CorpId,
    pub kind: String,
    pub notify_scene: i64,
    pub payload: String,
    pub state: MailboxState,
    pub notify_id: Option<NotifyId>,
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

pub trait MailboxStore: Send + Sync + 'static {
    /// Keeps an entry; `None` when its delivery key was seen before (a duplicate delivery).
    fn mailbox_insert(&self, entry: &NewMailboxEntry, now: i64) -> Result<Option<i64>, StoreError>;
    /// Records of `corp_id` stored after entry `mailbox_id` was created (for its pull summary).
    fn stored_since(&self, corp_id: &str, mailbox_id: i64) -> Result<StoredSince, StoreError>;
    fn mailbox_awaiting_pull(&self, corp_id: &str) -> Result<Vec<i64>, StoreError>;
    fn mailbox_entry(&self, id: i64) -> Result<Option<MailboxEntry>, StoreError>;
    /// Replaces the payload of an entry whose pull finished and queues its notification.
    fn mailbox_finish_pull(&self, id: i64, payload: &str) -> Result<(), StoreError>;
    /// Entries waiting for `spec_notify_app` whose next attempt is due at `now_ms`, soonest first.
    fn mailbox_due_notifications(&self, now_ms: i64, limit: usize) -> Result<Vec<MailboxEntry>, StoreError>;
    /// When the next waiting entry is due (Unix ms), if any waits.
    fn mailbox_next_attempt(&self) -> Result<Option<i64>, StoreError>;
    fn mailbox_set_notified(&self, id: i64, notify_id: &str, now: i64, expires_at: i64) -> Result<(), StoreError>;
    /// Counts a failed attempt: retried at `retry_at_ms`, or, with `None`, a dead letter.
    fn mailbox_notify_failed(&self, id: i64, retry_at_ms: Option<i64>) -> Result<(), StoreError>;
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
}
