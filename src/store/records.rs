//! The records aggregate: chat records, the page ledger and the cursor per corp.

use super::StoreError;
use crate::domain::{ContentStatus, DecryptStatus, MediaRef, MsgId};

/// One chat record as stored: every field of the `sync_msg` item, the decrypted secret key (or
/// why there is none) and the item's raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub msgid: MsgId,
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
    pub decrypt_status: DecryptStatus,
    pub call_duration: Option<i64>,
    /// The `sync_msg` item (or the finance SDK's `chatdata` item) as received.
    pub raw: String,
    /// For a classic archive record: its seq and decrypted content.
    pub archive: Option<ArchiveFields>,
}

impl NewRecord {
    /// A record of `msgid` with nothing known yet but its raw item: no parties, chat, time, type
    /// or key.
    pub fn bare(msgid: MsgId, raw: String) -> NewRecord {
        NewRecord {
            msgid,
            sender_type: 0,
            sender_id: String::new(),
            receivers: "[]".to_owned(),
            chatid: None,
            conversation: String::new(),
            send_time: 0,
            msgtype: 0,
            public_key_ver: None,
            encrypted_secret_key: None,
            secret_key: None,
            decrypt_status: DecryptStatus::Missing,
            call_duration: None,
            raw,
            archive: None,
        }
    }
}

/// What a classic archive record has beyond the zone's fields. Until the content is decrypted
/// the record's sender, receivers, chat and time are unknown (they are inside the ciphertext)
/// and stored empty; they are filled in when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFields {
    pub seq: u64,
    pub action: String,
    /// WeCom's msgtype string.
    pub msgtype: String,
    /// `msgtime` in milliseconds.
    pub msgtime: i64,
    /// The decrypted, validated message object (JSON text), when `content_status` is ok.
    pub content: Option<String>,
    pub content_status: ContentStatus,
    /// DecryptData attempts so far.
    pub attempts: u32,
    /// The media files the content refers to; queued for download when the content is stored
    /// ok (read back empty: the media aggregate keeps them).
    pub media: Vec<MediaRef>,
}

impl ArchiveFields {
    /// A record at `seq` whose content is not known (yet).
    pub fn unknown(seq: u64) -> ArchiveFields {
        ArchiveFields {
            seq,
            action: String::new(),
            msgtype: String::new(),
            msgtime: 0,
            content: None,
            content_status: ContentStatus::Pending,
            attempts: 0,
            media: Vec::new(),
        }
    }
}

/// A classic record whose content may be decrypted on a later try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRetry {
    pub id: i64,
    pub record: NewRecord,
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
    pub failed: Vec<(DecryptStatus, i64)>,
    pub pages: i64,
    pub newest_send_time: Option<i64>,
    /// Mailbox entries whose `spec_notify_app` never succeeded.
    pub dead_letter_notifications: i64,
    /// Async results `program_async_job_call_back` never accepted.
    pub dead_letter_jobs: i64,
    /// Classic archive records by content status (empty for a zone corp).
    pub content: Vec<(ContentStatus, i64)>,
    /// The last error that stopped a classic archive pull: WeCom's or the SDK's code, and when
    /// (Unix seconds); cleared by the next pull that succeeds.
    pub archive_error: Option<(i64, i64)>,
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

pub trait RecordStore: Send + Sync + 'static {
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
    fn set_secret_keys(&self, updates: &[(i64, Result<String, DecryptStatus>)]) -> Result<(), StoreError>;
    /// Classic records whose content is waiting to be decrypted again (transient SDK errors, and
    /// with `with_pending` those waiting for a key; fewer than `max_attempts` tries), after row
    /// `after_id`, oldest first.
    fn archive_retry_candidates(
        &self,
        corp_id: &str,
        after_id: i64,
        max_attempts: u32,
        with_pending: bool,
        limit: usize,
    ) -> Result<Vec<ArchiveRetry>, StoreError>;
    /// Stores new content outcomes (and the metadata they reveal) by row id, in one transaction;
    /// a record whose content became ok is indexed for the abilities then.
    fn set_archive_content(&self, corp_id: &str, updates: &[ArchiveRetry]) -> Result<(), StoreError>;
    /// Notes (or, with `None`, clears) the error that stopped the corp's last archive pull.
    fn set_archive_error(&self, corp_id: &str, error: Option<(i64, i64)>) -> Result<(), StoreError>;
    fn record(&self, corp_id: &str, msgid: &str) -> Result<Option<StoredRecord>, StoreError>;
    fn ingest_status(&self, corp_id: &str) -> Result<IngestStatus, StoreError>;
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
}
