//! The media aggregate: the files classic archive messages refer to, queued for download by
//! expiry (WeCom keeps an `sdkfileid` about three days), with the SDK's resume point
//! (`outindexbuf`) and the bytes already written, so a download resumes after a crash.

use super::StoreError;
use crate::domain::MediaStatus;

/// One queued or finished media file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaEntry {
    pub id: i64,
    pub corp_id: String,
    pub msgid: String,
    pub sdkfileid: String,
    /// As WeCom gave it (lower-case hex; empty when none was given).
    pub md5sum: String,
    /// As WeCom gave it (0 when not given).
    pub size: u64,
    pub filename: Option<String>,
    pub status: MediaStatus,
    /// Unix seconds: the message's time plus three days.
    pub expires_at: i64,
    /// GetMediaData's resume point; empty before the first chunk.
    pub outindexbuf: String,
    /// Bytes written to the partial file that `outindexbuf` follows.
    pub downloaded: u64,
    pub attempts: u32,
    /// The md5 of the stored file (its name under `[media] path`), once stored.
    pub stored_md5: Option<String>,
    pub stored_size: Option<u64>,
}

/// How a download ended (or paused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOutcome {
    Stored {
        md5: String,
        size: u64,
    },
    Failed,
    TooLarge,
    /// Try again at `at_ms` (Unix ms); with `restart` from the first byte (an md5 mismatch).
    Retry {
        at_ms: i64,
        restart: bool,
    },
}

pub trait MediaStore: Send + Sync + 'static {
    /// The pending entry that expires first among those due at `now_ms`.
    fn media_next_due(&self, now_ms: i64) -> Result<Option<MediaEntry>, StoreError>;
    /// When the earliest pending entry is due (Unix ms).
    fn media_next_attempt(&self) -> Result<Option<i64>, StoreError>;
    /// Records a chunk written: the new resume point and the bytes in the partial file.
    fn media_progress(&self, id: i64, outindexbuf: &str, downloaded: u64) -> Result<(), StoreError>;
    fn media_finish(&self, id: i64, outcome: &MediaOutcome) -> Result<(), StoreError>;
    /// The first media entry of a message.
    fn media_of(&self, corp_id: &str, msgid: &str) -> Result<Option<MediaEntry>, StoreError>;
}
