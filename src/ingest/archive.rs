//! The classic archive's pull: pages of `chatdata` by seq through the finance SDK worker.
//!
//! fetch (GetChatData) ‖ RSA (`encrypt_random_key` by `publickey_ver`, on the pool) ‖ DecryptData
//! (the worker) + validation + commit. Like the zone's pipeline, pages commit strictly in order,
//! each with the seq that follows it, so stopping anywhere leaves a consistent store. A record
//! whose content cannot be had now is committed anyway, with its content status: the cursor
//! never waits on one record and never skips one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{IngestError, PullSummary};
use crate::crypto::{KeyRing, SecretKeyError};
use crate::domain::{ContentStatus, CorpId, DecryptStatus, MsgId, unix_now};
use crate::finance::content::{self, ArchiveMessage, msgtype_code, party_type};
use crate::finance::{DecryptItem, Decrypted, FinanceError, Supervisor};
use crate::metrics::Metrics;
use crate::store::{ArchiveFields, ArchiveRetry, NewRecord, PageCommit, RecordStore, blocking};

/// Records retried per batch.
const RETRY_BATCH: usize = 500;
/// DecryptData tries per record before a transient status is left as it is.
pub const MAX_CONTENT_ATTEMPTS: u32 = 8;
/// Pages each stage may run ahead of the next: enough that the RSA pool never waits while a page
/// is in DecryptData or being committed (a few MB of ciphertext at most).
const PAGES_AHEAD: usize = 4;
/// Answers in a row that may fail to move the seq before the pull stops.
const MAX_UNMOVED_PAGES: u32 = 3;

/// One `chatdata` item (reference §4).
#[derive(Debug, Deserialize)]
struct ChatDataItem {
    seq: u64,
    msgid: String,
    #[serde(default)]
    publickey_ver: u32,
    #[serde(default)]
    encrypt_random_key: String,
    #[serde(default)]
    encrypt_chat_msg: String,
}

#[derive(Deserialize)]
struct ChatDataAnswer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    chatdata: Vec<Box<RawValue>>,
}

/// The finance corps and what pulls for them.
pub struct ArchiveSource {
    supervisor: Arc<Supervisor>,
    corps: HashSet<CorpId>,
    page_limit: u32,
    /// Told when committed content queued media files.
    media_wake: Arc<Notify>,
    /// Told whenever content was committed (the search indexer waits on it).
    content_wake: Arc<Notify>,
}

impl ArchiveSource {
    pub fn new(supervisor: Arc<Supervisor>, corps: HashSet<CorpId>, page_limit: u32) -> ArchiveSource {
        ArchiveSource {
            supervisor,
            corps,
            page_limit,
            media_wake: Arc::new(Notify::new()),
            content_wake: Arc::new(Notify::new()),
        }
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// Notified whenever stored content queued media files (the media worker waits on it).
    pub fn media_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.media_wake)
    }

    /// Notified whenever content was committed (the search indexer waits on it).
    pub fn content_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.content_wake)
    }

    /// After a commit of `records`' content: wakes the indexer, and the media worker when any
    /// media file was queued.
    fn committed<'r>(&self, records: impl IntoIterator<Item = &'r NewRecord>) {
        self.content_wake.notify_one();
        let any =
            records.into_iter().any(|record| record.archive.as_ref().is_some_and(|archive| !archive.media.is_empty()));
        if any {
            self.media_wake.notify_one();
        }
    }

    pub fn serves(&self, corp_id: &str) -> bool {
        self.corps.contains(corp_id)
    }
}

/// One item, parsed, with what RSA gave for its key.
struct Keyed {
    /// DecryptData attempts before this one.
    attempts: u32,
    raw: String,
    item: Option<ChatDataItem>,
    key: Result<String, SecretKeyError>,
}

struct FetchedPage {
    seq_in: u64,
    seq_out: u64,
    items: Vec<Box<RawValue>>,
}

struct KeyedPage {
    seq_in: u64,
    seq_out: u64,
    keyed: oneshot::Receiver<Vec<Keyed>>,
}

/// The pull, and the retry of content that could not be had before.
pub struct ArchivePull<'a> {
    pub source: &'a ArchiveSource,
    pub store: &'a Arc<dyn RecordStore>,
    pub ring: Arc<KeyRing>,
    pub pool: &'a Arc<rayon::ThreadPool>,
    pub metrics: &'a Arc<Metrics>,
}

impl ArchivePull<'_> {
    /// Pulls from the stored seq until GetChatData answers no records.
    pub async fn pull(&self, corp_id: &str) -> Result<PullSummary, IngestError> {
        let store = Arc::clone(self.store);
        let owned_corp = corp_id.to_owned();
        let cursor = blocking(move || store.cursor(&owned_corp)).await?;
        let seq = cursor.as_deref().map_or(Ok(0), str::parse::<u64>).map_err(|_| IngestError::BadSeq)?;
        let (fetched_tx, fetched_rx) = mpsc::channel(PAGES_AHEAD);
        let (keyed_tx, keyed_rx) = mpsc::channel(PAGES_AHEAD);
        let (fetched, keyed, committed) = tokio::join!(
            self.fetch_pages(corp_id, seq, fetched_tx),
            self.key_pages(fetched_rx, keyed_tx),
            self.decrypt_and_commit(corp_id, keyed_rx),
        );
        let outcome = committed.and_then(|summary| keyed.and(fetched).map(|()| summary));
        let error = match &outcome {
            Ok(_) => None,
            Err(error) => error.archive_code().map(|code| (code, unix_now())),
        };
        let store = Arc::clone(self.store);
        let owned_corp = corp_id.to_owned();
        blocking(move || store.set_archive_error(&owned_corp, error)).await?;
        outcome
    }

    async fn fetch_pages(
        &self,
        corp_id: &str,
        mut seq: u64,
        pages: mpsc::Sender<FetchedPage>,
    ) -> Result<(), IngestError> {
        let mut unmoved = 0;
        loop {
            let bytes = self.source.supervisor.get_chat_data(corp_id, seq, self.source.page_limit).await?;
            let answer: ChatDataAnswer =
                serde_json::from_slice(&bytes).map_err(|_| IngestError::Finance(FinanceError::Sdk(10002)))?;
            if answer.errcode != 0 {
                return Err(IngestError::Archive(answer.errcode));
            }
            if answer.chatdata.is_empty() {
                return Ok(());
            }
            let seq_out = answer
                .chatdata
                .iter()
                .filter_map(|raw| serde_json::from_str::<SeqOnly>(raw.get()).ok())
                .map(|item| item.seq)
                .max()
                .unwrap_or(seq)
                .max(seq);
            unmoved = if seq_out > seq { 0 } else { unmoved + 1 };
            if unmoved >= MAX_UNMOVED_PAGES {
                return Err(IngestError::CursorStuck(unmoved));
            }
            if pages.send(FetchedPage { seq_in: seq, seq_out, items: answer.chatdata }).await.is_err() {
                return Ok(()); // a later stage stopped; it reports why
            }
            seq = seq_out;
        }
    }

    async fn key_pages(
        &self,
        mut pages: mpsc::Receiver<FetchedPage>,
        keyed: mpsc::Sender<KeyedPage>,
    ) -> Result<(), IngestError> {
        while let Some(page) = pages.recv().await {
            let ring = Arc::clone(&self.ring);
            let (done_tx, done_rx) = oneshot::channel();
            let items = page.items;
            self.pool.spawn(move || {
                use rayon::prelude::*;
                let _ = done_tx.send(items.par_iter().map(|raw| key_item(raw, &ring)).collect());
            });
            let handed_over = KeyedPage { seq_in: page.seq_in, seq_out: page.seq_out, keyed: done_rx };
            if keyed.send(handed_over).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn decrypt_and_commit(
        &self,
        corp_id: &str,
        mut pages: mpsc::Receiver<KeyedPage>,
    ) -> Result<PullSummary, IngestError> {
        let mut summary = PullSummary::default();
        while let Some(page) = pages.recv().await {
            let keyed = page.keyed.await.map_err(|_| IngestError::WorkerLost)?;
            let records = self.decrypt(keyed).await?;
            self.count(corp_id, records.iter().filter_map(|record| record.archive.as_ref()));
            let key_failures = records.iter().filter(|record| record.decrypt_status != DecryptStatus::Ok).count();
            let commit = PageCommit {
                corp_id: corp_id.to_owned(),
                cursor_in: Some(page.seq_in.to_string()),
                cursor_out: page.seq_out.to_string(),
                records,
            };
            let store = Arc::clone(self.store);
            let (outcome, commit) =
                blocking(move || store.commit_page(&commit).map(|outcome| (outcome, commit))).await?;
            self.metrics.page_committed(corp_id, outcome.inserted, outcome.duplicates);
            self.source.committed(&commit.records);
            summary.pages += 1;
            summary.inserted += outcome.inserted;
            summary.duplicates += outcome.duplicates;
            summary.key_failures += key_failures;
            for record in commit.records.iter().filter(|record| record.send_time > 0) {
                let (low, high) = summary.time_range.unwrap_or((record.send_time, record.send_time));
                summary.time_range = Some((low.min(record.send_time), high.max(record.send_time)));
            }
        }
        Ok(summary)
    }

    /// DecryptData for every keyed item (one worker call for the page), then validation.
    async fn decrypt(&self, keyed: Vec<Keyed>) -> Result<Vec<NewRecord>, IngestError> {
        let requests: Vec<(usize, DecryptItem)> = keyed
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                let (Some(parsed), Ok(key)) = (&item.item, &item.key) else { return None };
                Some((index, DecryptItem { key: key.clone(), encrypt_chat_msg: parsed.encrypt_chat_msg.clone() }))
            })
            .collect();
        let items: Vec<DecryptItem> = requests.iter().map(|(_, item)| item.clone()).collect();
        let answers = if items.is_empty() { Vec::new() } else { self.source.supervisor.decrypt(&items).await? };
        let mut decrypted: HashMap<usize, Decrypted> =
            requests.into_iter().map(|(index, _)| index).zip(answers).collect();
        Ok(keyed.into_iter().enumerate().map(|(index, item)| archive_record(item, decrypted.remove(&index))).collect())
    }

    fn count<'r>(&self, corp_id: &str, archives: impl Iterator<Item = &'r ArchiveFields>) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for archive in archives {
            *counts.entry(archive.content_status.as_string()).or_default() += 1;
        }
        for (status, count) in counts {
            self.metrics.finance_content(corp_id, &status, count);
        }
    }

    /// Tries again the records whose content could not be had: transient SDK errors, and with
    /// `with_pending` (at start-up, when keys may have appeared) records waiting for their key.
    /// Returns how many became ok.
    pub async fn retry_content(&self, corp_id: &str, with_pending: bool) -> Result<usize, IngestError> {
        let mut recovered = 0;
        let mut after_id = 0;
        loop {
            let store = Arc::clone(self.store);
            let owned_corp = corp_id.to_owned();
            let candidates = blocking(move || {
                store.archive_retry_candidates(&owned_corp, after_id, MAX_CONTENT_ATTEMPTS, with_pending, RETRY_BATCH)
            })
            .await?;
            let Some(last) = candidates.last() else { break };
            after_id = last.id;
            // A record waiting for a key version that is still missing is left alone.
            let candidates: Vec<ArchiveRetry> = candidates
                .into_iter()
                .filter(|candidate| {
                    candidate
                        .record
                        .archive
                        .as_ref()
                        .is_some_and(|archive| archive.content_status != ContentStatus::Pending)
                        || candidate.record.public_key_ver.is_some_and(|version| self.ring.has_version(version))
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let ring = Arc::clone(&self.ring);
            let (done_tx, done_rx) = oneshot::channel();
            let raws: Vec<(i64, String, u32)> = candidates
                .iter()
                .map(|candidate| {
                    let attempts = candidate.record.archive.as_ref().map_or(0, |archive| archive.attempts);
                    (candidate.id, candidate.record.raw.clone(), attempts)
                })
                .collect();
            self.pool.spawn(move || {
                use rayon::prelude::*;
                let keyed: Vec<(i64, Keyed)> = raws
                    .par_iter()
                    .filter_map(|(id, raw, attempts)| {
                        let raw = RawValue::from_string(raw.clone()).ok()?;
                        Some((*id, Keyed { attempts: *attempts, ..key_item(&raw, &ring) }))
                    })
                    .collect();
                let _ = done_tx.send(keyed);
            });
            let (ids, keyed): (Vec<i64>, Vec<Keyed>) =
                done_rx.await.map_err(|_| IngestError::WorkerLost)?.into_iter().unzip();
            let updates: Vec<ArchiveRetry> = ids
                .into_iter()
                .zip(self.decrypt(keyed).await?)
                .map(|(id, record)| ArchiveRetry { id, record })
                .collect();
            let now_ok = updates
                .iter()
                .filter(|update| {
                    update.record.archive.as_ref().is_some_and(|archive| archive.content_status == ContentStatus::Ok)
                })
                .count();
            self.count(corp_id, updates.iter().filter_map(|update| update.record.archive.as_ref()));
            let store = Arc::clone(self.store);
            let owned_corp = corp_id.to_owned();
            let updates = blocking(move || store.set_archive_content(&owned_corp, &updates).map(|()| updates)).await?;
            self.source.committed(updates.iter().map(|update| &update.record));
            recovered += now_ok;
        }
        if recovered > 0 {
            tracing::info!(corp_id, recovered, "archive content decrypted on a later try");
        }
        Ok(recovered)
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Parses an item and RSA-decrypts its `encrypt_random_key` with the key of its version.
fn key_item(raw: &RawValue, ring: &KeyRing) -> Keyed {
    let item = serde_json::from_str::<ChatDataItem>(raw.get()).ok();
    let key = match &item {
        Some(item) => ring.decrypt_secret_key(item.publickey_ver, &item.encrypt_random_key),
        None => Err(SecretKeyError::Missing),
    };
    Keyed { attempts: 0, raw: raw.get().to_owned(), item, key }
}

/// The record for an item: its content if DecryptData gave a valid one, else why not.
fn archive_record(keyed: Keyed, decrypted: Option<Decrypted>) -> NewRecord {
    let Some(item) = keyed.item else { return malformed(keyed.raw) };
    let (secret_key, decrypt_status) = match &keyed.key {
        Ok(key) => (Some(key.clone()), DecryptStatus::Ok),
        Err(error) => (None, error.status()),
    };
    let (status, message) = match (&keyed.key, decrypted) {
        (Err(SecretKeyError::UnknownKeyVersion), _) => (ContentStatus::Pending, None),
        // The key did not RSA-decrypt with the right version's key: DecryptData cannot help.
        (Err(_), _) => (ContentStatus::Invalid, None),
        (Ok(_), Some(Decrypted::Plaintext(plaintext))) => match content::validate(&item.msgid, &plaintext) {
            Ok(message) => (ContentStatus::Ok, Some(message)),
            Err(_) => (ContentStatus::Invalid, None),
        },
        (Ok(_), Some(Decrypted::Sdk(code))) => (ContentStatus::SdkError(code), None),
        (Ok(_), Some(Decrypted::Crashed)) => (ContentStatus::Crashed, None),
        (Ok(_), None) => (ContentStatus::Pending, None),
    };
    let attempts = keyed.attempts + u32::from(keyed.key.is_ok());
    let mut record = NewRecord {
        public_key_ver: Some(item.publickey_ver),
        encrypted_secret_key: Some(item.encrypt_random_key),
        secret_key,
        decrypt_status,
        archive: Some(ArchiveFields { content_status: status, attempts, ..ArchiveFields::unknown(item.seq) }),
        ..NewRecord::bare(MsgId::from(item.msgid), keyed.raw)
    };
    if let Some(message) = message {
        fill_from_content(&mut record, message);
    }
    record
}

/// The metadata the decrypted message reveals, in the columns the abilities search by.
fn fill_from_content(record: &mut NewRecord, message: ArchiveMessage) {
    let receivers: Vec<_> = message.tolist.iter().map(|id| json!({"type": party_type(id), "id": id})).collect();
    record.sender_type = party_type(&message.from);
    record.receivers = serde_json::to_string(&receivers).unwrap_or_else(|_| "[]".into());
    record.chatid = Some(message.roomid.clone()).filter(|roomid| !roomid.is_empty());
    record.conversation = match &record.chatid {
        Some(roomid) => roomid.clone(),
        None => {
            let mut ids: Vec<&str> = message.tolist.iter().map(String::as_str).collect();
            ids.push(&message.from);
            ids.sort_unstable();
            ids.dedup();
            ids.join("|")
        }
    };
    record.sender_id = message.from;
    record.send_time = message.msgtime.div_euclid(1000);
    record.msgtype = msgtype_code(&message.msgtype);
    if let Some(archive) = &mut record.archive {
        archive.action = message.action;
        archive.msgtype = message.msgtype;
        archive.msgtime = message.msgtime;
        archive.content = Some(message.content);
        archive.content_status = ContentStatus::Ok;
        archive.media = message.media;
    }
}

/// An item without a seq or msgid: kept raw under a synthetic msgid (never lost, never doubled).
fn malformed(raw: String) -> NewRecord {
    let archive = ArchiveFields { content_status: ContentStatus::Invalid, ..ArchiveFields::unknown(0) };
    NewRecord { archive: Some(archive), ..super::records::malformed(&raw) }
}
