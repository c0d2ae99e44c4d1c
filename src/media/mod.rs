//! Classic media: the background download of the files classic messages refer to, and the
//! files themselves.
//!
//! [`MediaFetcher`] is a background worker. Each round takes the pending file that expires first
//! (an `sdkfileid` lives about three days) and downloads it with GetMediaData in the SDK's 512 KB
//! chunks through its own finance worker, so a download never delays the message cursor. After
//! each chunk the bytes are synced to a partial file and then its length and the SDK's
//! `outindexbuf` are stored: a crash resumes from the last stored chunk (the partial file is cut
//! back to the stored length first). A finished file is checked against WeCom's `md5sum`; a
//! mismatch starts it again later, a match moves it to `<path>/<md5[..2]>/<md5>`, one file per
//! md5 (a second message with the same file shares it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::background::{self, EntryRetry, Round, Worker};
use crate::domain::{BoxFuture, Clock};
use crate::finance::{FinanceError, Supervisor};
use crate::store::{MediaEntry, MediaOutcome, MediaStore, StoreError, blocking};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media file IO failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

/// Where media files live: `<root>/<md5[..2]>/<md5>`, partial downloads under `<root>/partial/`.
/// Folders are created 0700 and files 0600.
#[derive(Debug, Clone)]
pub struct MediaFiles {
    root: PathBuf,
}

impl MediaFiles {
    pub fn new(root: impl Into<PathBuf>) -> MediaFiles {
        MediaFiles { root: root.into() }
    }

    fn partial(&self, id: i64) -> PathBuf {
        self.root.join("partial").join(format!("{id}.part"))
    }

    /// The stored file of `md5` (lower-case hex).
    pub fn stored(&self, md5: &str) -> PathBuf {
        let prefix = md5.get(..2).unwrap_or("00");
        self.root.join(prefix).join(md5)
    }

    /// Up to `length` bytes of the stored file `md5` from `offset`.
    pub async fn read(&self, md5: &str, offset: u64, length: usize) -> std::io::Result<Vec<u8>> {
        let mut file = tokio::fs::File::open(self.stored(md5)).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut bytes = Vec::with_capacity(length);
        file.take(length as u64).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }
}

async fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(path).await
}

/// GetMediaData codes that end a download for good (reference §9.4).
const FILE_ID_INVALID: i32 = 10005;
const DATA_EXPIRED: i32 = 10010;

/// The download worker.
pub struct MediaFetcher {
    store: Arc<dyn MediaStore>,
    supervisor: Arc<Supervisor>,
    files: MediaFiles,
    max_file_bytes: u64,
    retry: EntryRetry,
    clock: Clock,
}

impl MediaFetcher {
    pub fn new(
        store: Arc<dyn MediaStore>,
        supervisor: Arc<Supervisor>,
        files: MediaFiles,
        max_file_bytes: u64,
        retry: EntryRetry,
        clock: Clock,
    ) -> MediaFetcher {
        MediaFetcher { store, supervisor, files, max_file_bytes, retry, clock }
    }

    /// The finance worker this fetcher downloads through.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    async fn next_round(&self) -> Result<Round, MediaError> {
        let store = Arc::clone(&self.store);
        let now_ms = self.clock.now_ms();
        let Some(entry) = blocking(move || store.media_next_due(now_ms)).await? else {
            let store = Arc::clone(&self.store);
            let next_due = blocking(move || store.media_next_attempt()).await?;
            return Ok(background::after_batch(false, next_due, self.clock.now_ms()));
        };
        let outcome = self.download(&entry).await?;
        if !matches!(outcome, MediaOutcome::Stored { .. }) {
            tracing::info!(media = entry.id, ?outcome, "media download did not store a file");
        }
        let store = Arc::clone(&self.store);
        blocking(move || store.media_finish(entry.id, &outcome)).await?;
        Ok(Round::More)
    }

    /// Downloads (or resumes) one file to its end, then verifies and keeps it.
    async fn download(&self, entry: &MediaEntry) -> Result<MediaOutcome, MediaError> {
        if entry.size > self.max_file_bytes {
            return Ok(MediaOutcome::TooLarge);
        }
        let partial = self.files.partial(entry.id);
        private_dir(partial.parent().unwrap_or(&self.files.root)).await?;
        let mut file = open_private(&partial).await?;
        // The partial file holds exactly the stored length: bytes past it were written by a
        // chunk whose progress never committed, and that chunk is asked for again.
        let on_disk = file.metadata().await?.len();
        let (mut outindexbuf, mut downloaded) = if on_disk >= entry.downloaded {
            (entry.outindexbuf.clone(), entry.downloaded)
        } else {
            (String::new(), 0)
        };
        file.set_len(downloaded).await?;
        file.seek(std::io::SeekFrom::Start(downloaded)).await?;
        loop {
            let chunk = match self.supervisor.get_media_data(&entry.corp_id, &entry.sdkfileid, &outindexbuf).await {
                Ok(chunk) => chunk,
                Err(error) => return Ok(self.after_error(entry, &error)),
            };
            downloaded += chunk.data.len() as u64;
            if downloaded > self.max_file_bytes {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Ok(MediaOutcome::TooLarge);
            }
            file.write_all(&chunk.data).await?;
            file.sync_data().await?;
            let (store, id, index) = (Arc::clone(&self.store), entry.id, chunk.outindexbuf.clone());
            blocking(move || store.media_progress(id, &index, downloaded)).await?;
            if chunk.finished {
                break;
            }
            outindexbuf = chunk.outindexbuf;
        }
        drop(file);
        let md5 = md5_of(&partial).await?;
        if !entry.md5sum.is_empty() && md5 != entry.md5sum {
            tracing::warn!(media = entry.id, "downloaded media does not match WeCom's md5sum; downloading again");
            let _ = tokio::fs::remove_file(&partial).await;
            return Ok(self.retry_or_fail(entry, true));
        }
        let stored = self.files.stored(&md5);
        private_dir(stored.parent().unwrap_or(&self.files.root)).await?;
        if tokio::fs::try_exists(&stored).await? {
            tokio::fs::remove_file(&partial).await?; // the same file, already kept for another message
        } else {
            tokio::fs::rename(&partial, &stored).await?;
        }
        Ok(MediaOutcome::Stored { md5, size: downloaded })
    }

    fn after_error(&self, entry: &MediaEntry, error: &FinanceError) -> MediaOutcome {
        match error {
            // A bad sdkfileid or expired data: asking again cannot help. Anything else (network,
            // an untrusted IP, a Secret being fixed, a lost worker) may pass: retried with backoff.
            FinanceError::Sdk(code @ (FILE_ID_INVALID | DATA_EXPIRED)) => {
                tracing::warn!(media = entry.id, code, "GetMediaData refused the file");
                MediaOutcome::Failed
            }
            _ => self.retry_or_fail(entry, false),
        }
    }

    fn retry_or_fail(&self, entry: &MediaEntry, restart: bool) -> MediaOutcome {
        let attempt = entry.attempts + 1;
        if attempt >= self.retry.max_attempts {
            return MediaOutcome::Failed;
        }
        let wait = self.retry.backoff.delay_at_least_base(attempt - 1);
        MediaOutcome::Retry { at_ms: self.clock.now_ms() + wait.as_millis() as i64, restart }
    }
}

impl Worker for MediaFetcher {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move { background::logged("media", self.next_round().await) })
    }
}

async fn open_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).read(true).write(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

/// The md5 of a file, read in chunks (each hashed between awaits).
async fn md5_of(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 512 * 1024];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}
