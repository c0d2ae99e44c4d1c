//! SQLite (bundled) in WAL mode. One connection behind a mutex serialises writers; every
//! statement is prepared once and cached.
//!
//! Durability: `synchronous = NORMAL` in WAL mode survives any process crash (the WAL is written
//! before the commit returns). A power loss may drop the last commits, but never a page without
//! its cursor or the reverse, so the pages are pulled again and nothing is lost or doubled.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, params};

use super::{
    ArchiveFields, ArchiveRetry, Conversation, IngestStatus, Job, JobDelivery, JobStore, MailboxEntry, MailboxStore,
    MediaEntry, MediaOutcome, MediaStore, MessageFilter, NewJob, NewMailboxEntry, NewRecord, PageCommit, PageOutcome,
    PendingKey, RecordStore, SearchChange, SearchMark, SearchRow, SearchStore, StoreError, StoreHealth, StoredRecord,
    StoredSince,
};
use crate::domain::{ContentStatus, DecryptStatus, JobState, MailboxState, MediaStatus, unix_now};

/// Embedded migrations, applied in order; `PRAGMA user_version` counts the applied ones.
/// (rusqlite_migration does the same but lags rusqlite releases, so these few lines stay here.)
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    id                   INTEGER PRIMARY KEY,
    corp_id              TEXT    NOT NULL,
    msgid                TEXT    NOT NULL,
    sender_type          INTEGER NOT NULL,
    sender_id            TEXT    NOT NULL,
    receivers            TEXT    NOT NULL,
    chatid               TEXT,
    conversation         TEXT    NOT NULL,
    send_time            INTEGER NOT NULL,
    msgtype              INTEGER NOT NULL,
    public_key_ver       INTEGER,
    encrypted_secret_key TEXT,
    secret_key           TEXT,
    decrypt_status       TEXT    NOT NULL,
    call_duration        INTEGER,
    raw                  TEXT    NOT NULL,
    page_id              INTEGER NOT NULL REFERENCES pages(id),
    stored_at            INTEGER NOT NULL
);
CREATE UNIQUE INDEX records_msgid ON records(corp_id, msgid);
CREATE INDEX records_pending ON records(corp_id, public_key_ver, id) WHERE decrypt_status <> 'ok';
CREATE INDEX records_conversation ON records(corp_id, conversation);

CREATE TABLE pages (
    id           INTEGER PRIMARY KEY,
    corp_id      TEXT    NOT NULL,
    cursor_in    TEXT,
    cursor_out   TEXT    NOT NULL,
    n_records    INTEGER NOT NULL,
    n_inserted   INTEGER NOT NULL,
    first_msgid  TEXT,
    last_msgid   TEXT,
    committed_at INTEGER NOT NULL
);

CREATE TABLE cursors (
    corp_id      TEXT PRIMARY KEY,
    cursor       TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_pull_at INTEGER
);
"#,
    r#"
CREATE TABLE mailbox (
    id              INTEGER PRIMARY KEY,
    corp_id         TEXT    NOT NULL,
    delivery_key    BLOB,
    kind            TEXT    NOT NULL,
    notify_scene    INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    notify_id       TEXT,
    created_at      INTEGER NOT NULL,
    notified_at     INTEGER,
    expires_at      INTEGER,
    notify_attempts INTEGER NOT NULL DEFAULT 0,
    pull_mark       INTEGER
);
CREATE UNIQUE INDEX mailbox_delivery ON mailbox(corp_id, delivery_key) WHERE delivery_key IS NOT NULL;
CREATE INDEX mailbox_notify_id ON mailbox(corp_id, notify_id) WHERE notify_id IS NOT NULL;
CREATE INDEX mailbox_state ON mailbox(state, id);

CREATE TABLE mailbox_fetches (
    id          INTEGER PRIMARY KEY,
    mailbox_id  INTEGER NOT NULL REFERENCES mailbox(id) ON DELETE CASCADE,
    page        INTEGER NOT NULL,
    fetched_at  INTEGER NOT NULL
);
CREATE INDEX mailbox_fetches_entry ON mailbox_fetches(mailbox_id);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    corp_id      TEXT    NOT NULL,
    agent_id     INTEGER NOT NULL,
    ability_id   TEXT    NOT NULL,
    notify_id    TEXT    NOT NULL,
    job_info     TEXT    NOT NULL,
    request_data TEXT    NOT NULL,
    delivery_key BLOB,
    state        TEXT    NOT NULL,
    errcode      INTEGER,
    result       TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX jobs_delivery ON jobs(corp_id, delivery_key) WHERE delivery_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs(state, id);
"#,
    // Per-entry retry schedules (Unix ms) for notifications and async results.
    r#"
ALTER TABLE mailbox ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
DROP INDEX mailbox_state;
CREATE INDEX mailbox_due ON mailbox(state, next_attempt_at, id);
ALTER TABLE jobs ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_state;
CREATE INDEX jobs_due ON jobs(state, next_attempt_at, id);
"#,
    // Indexes for the abilities at a million records and more: keyset paging per corp, chats,
    // times; the parties of each record (replacing JSON scans); conversations and per-corp counts
    // kept as records are committed (replacing GROUP BY and count(*) over the corp).
    r#"
CREATE INDEX records_keyset ON records(corp_id, id);
CREATE INDEX records_chat ON records(corp_id, chatid, id) WHERE chatid IS NOT NULL;
CREATE INDEX records_send_time ON records(corp_id, send_time);
DROP INDEX records_conversation;

CREATE TABLE record_parties (
    corp_id    TEXT    NOT NULL,
    party_type INTEGER NOT NULL,
    party_id   TEXT    NOT NULL,
    record_id  INTEGER NOT NULL,
    PRIMARY KEY (corp_id, party_type, party_id, record_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO record_parties SELECT corp_id, sender_type, sender_id, id FROM records;
INSERT OR IGNORE INTO record_parties
    SELECT r.corp_id, coalesce(json_extract(p.value, '$.type'), 0), json_extract(p.value, '$.id'), r.id
    FROM records r, json_each(r.receivers) p WHERE json_extract(p.value, '$.id') IS NOT NULL;

CREATE TABLE conversations (
    corp_id        TEXT    NOT NULL,
    conversation   TEXT    NOT NULL,
    message_count  INTEGER NOT NULL,
    last_send_time INTEGER NOT NULL,
    newest_id      INTEGER NOT NULL,
    PRIMARY KEY (corp_id, conversation)
) WITHOUT ROWID;
INSERT INTO conversations
    SELECT corp_id, conversation, count(*), max(send_time), max(id) FROM records
    WHERE conversation <> '' GROUP BY corp_id, conversation;

CREATE TABLE conversation_parties (
    corp_id      TEXT NOT NULL,
    party_id     TEXT NOT NULL,
    conversation TEXT NOT NULL,
    PRIMARY KEY (corp_id, party_id, conversation)
) WITHOUT ROWID;
INSERT OR IGNORE INTO conversation_parties
    SELECT p.corp_id, p.party_id, r.conversation FROM record_parties p JOIN records r ON r.id = p.record_id
    WHERE r.conversation <> '';

CREATE TABLE corp_stats (
    corp_id TEXT PRIMARY KEY,
    stored  INTEGER NOT NULL,
    pages   INTEGER NOT NULL
);
INSERT INTO corp_stats SELECT corp_id, count(*), 0 FROM records GROUP BY corp_id;
INSERT OR IGNORE INTO corp_stats SELECT DISTINCT corp_id, 0, 0 FROM pages;
UPDATE corp_stats SET pages = (SELECT count(*) FROM pages WHERE pages.corp_id = corp_stats.corp_id);
"#,
    // The classic archive: each record's seq and decrypted content beside its row in `records`;
    // counts by content status kept as they change; the error that stopped the last pull.
    r#"
CREATE TABLE archive_content (
    record_id      INTEGER PRIMARY KEY REFERENCES records(id),
    corp_id        TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    action         TEXT    NOT NULL,
    msgtype        TEXT    NOT NULL,
    msgtime        INTEGER NOT NULL,
    content        TEXT,
    content_status TEXT    NOT NULL,
    attempts       INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX archive_not_ok ON archive_content(corp_id, record_id) WHERE content_status <> 'ok';

CREATE TABLE archive_stats (
    corp_id        TEXT    NOT NULL,
    content_status TEXT    NOT NULL,
    records        INTEGER NOT NULL,
    PRIMARY KEY (corp_id, content_status)
) WITHOUT ROWID;

ALTER TABLE cursors ADD COLUMN archive_error_code INTEGER;
ALTER TABLE cursors ADD COLUMN archive_error_at INTEGER;
"#,
    // Classic media: one row per file a message refers to, queued by expiry, with the SDK's
    // resume point and the bytes written so far.
    r#"
CREATE TABLE media (
    id              INTEGER PRIMARY KEY,
    corp_id         TEXT    NOT NULL,
    msgid           TEXT    NOT NULL,
    item            INTEGER NOT NULL,
    sdkfileid       TEXT    NOT NULL,
    md5sum          TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    filename        TEXT,
    status          TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL,
    outindexbuf     TEXT    NOT NULL DEFAULT '',
    downloaded      INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    stored_md5      TEXT,
    stored_size     INTEGER,
    UNIQUE (corp_id, msgid, item)
);
CREATE INDEX media_due ON media(expires_at, id) WHERE status = 'pending';
"#,
    // Full-text search: this store's identity (an index follows one store), the change feed the
    // index follows (every content write takes the next revision), and the recall records by the
    // message they recall (a hit shows it is recalled).
    // The recall key is guarded by json_valid so that no stored content can fail a write.
    r#"
CREATE TABLE store_identity (id TEXT NOT NULL);
INSERT INTO store_identity VALUES (lower(hex(randomblob(16))));
ALTER TABLE archive_content ADD COLUMN search_rev INTEGER NOT NULL DEFAULT 0;
CREATE INDEX archive_search_feed ON archive_content(search_rev, record_id);
CREATE INDEX archive_recalls ON archive_content(corp_id, (CASE WHEN json_valid(content) THEN json_extract(content, '$.revoke.pre_msgid') END))
    WHERE msgtype = 'revoke';
"#,
];

/// The next revision of the search change feed, read inside the writing transaction.
const NEXT_SEARCH_REV: &str = "(SELECT coalesce(max(search_rev), 0) + 1 FROM archive_content)";

/// A record's columns (`records r`) and its archive content (`LEFT JOIN archive_content a`).
const RECORD_COLUMNS: &str = "r.id, r.msgid, r.sender_type, r.sender_id, r.receivers, r.chatid, r.conversation,
    r.send_time, r.msgtype, r.public_key_ver, r.encrypted_secret_key, r.secret_key, r.decrypt_status,
    r.call_duration, r.raw, r.stored_at, a.seq, a.action, a.msgtype, a.msgtime, a.content, a.content_status,
    a.attempts";

/// Joins each record to its archive content (none for a zone record).
const ARCHIVE_JOIN: &str = "LEFT JOIN archive_content a ON a.record_id = r.id";

const MEDIA_COLUMNS: &str = "id, corp_id, msgid, sdkfileid, md5sum, size, filename, status, expires_at, outindexbuf,
    downloaded, attempts, stored_md5, stored_size";

const MAILBOX_COLUMNS: &str = "id, corp_id, kind, notify_scene, payload, state, notify_id, created_at, notified_at,
    expires_at, notify_attempts, (SELECT count(*) FROM mailbox_fetches WHERE mailbox_id = mailbox.id)";

pub struct SqliteStore {
    // A std Mutex: SQLite calls are blocking and run on blocking threads, never across an await.
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating the folder and file if needed) and migrates. A folder it creates is 0700
    /// and a database file it creates is 0600; SQLite gives the WAL and SHM files the database
    /// file's mode, so chat records and secret keys are readable by the service's user alone.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            private_dir(parent).map_err(|source| StoreError::CreateDir { path: parent.to_path_buf(), source })?;
        }
        private_file(path).map_err(|source| StoreError::CreateDir { path: path.to_path_buf(), source })?;
        Self::from_connection(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut connection: Connection) -> Result<SqliteStore, StoreError> {
        // First, so that even switching to WAL waits for another process opening the same file.
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // 32 MiB of page cache keeps the msgid, keyset and party indexes hot while millions of
        // records arrive; checkpoints every 32 MiB of WAL (not SQLite's 4 MiB) write each hot
        // index page once per many commits instead of once per few.
        connection.pragma_update(None, "cache_size", -32_000)?;
        connection.pragma_update(None, "wal_autocheckpoint", 8_192)?;
        connection.set_prepared_statement_cache_capacity(64);
        migrate(&mut connection)?;
        Ok(SqliteStore { connection: Mutex::new(connection) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Creates an empty file with mode 0600 unless one exists (SQLite then opens it as a new database).
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Applies the missing migrations, each in an IMMEDIATE transaction that reads `user_version`
/// again under the write lock: two processes opening a fresh file at once (a service and a
/// `reindex`, or a test's reader) apply each migration once between them.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: i64 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if applied > supported {
            return Err(StoreError::SchemaTooNew { found: applied, supported });
        }
        let Some(migration) = MIGRATIONS.get(applied as usize) else { return Ok(()) };
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", applied + 1)?;
        transaction.commit()?;
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

/// States are stored as their text and read back strictly.
macro_rules! sql_text_state {
    ($($state:ty),+) => {$(
        impl ToSql for $state {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $state {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|error| FromSqlError::Other(Box::new(error)))
            }
        }
    )+};
}

sql_text_state!(DecryptStatus, MailboxState, JobState, MediaStatus);

impl ToSql for ContentStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_string()))
    }
}

impl FromSql for ContentStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(|error| FromSqlError::Other(Box::new(error)))
    }
}

impl StoreHealth for SqliteStore {
    fn check(&self) -> Result<(), StoreError> {
        self.lock().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

impl RecordStore for SqliteStore {
    fn cursor(&self, corp_id: &str) -> Result<Option<String>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached("SELECT cursor FROM cursors WHERE corp_id = ?1")?;
        let cursor: Option<String> = statement.query_row([corp_id], |row| row.get(0)).optional()?;
        Ok(cursor.filter(|cursor| !cursor.is_empty()))
    }

    fn commit_page(&self, page: &PageCommit) -> Result<PageOutcome, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let outcome = commit_page_in(&transaction, page)?;
        transaction.commit()?;
        Ok(outcome)
    }

    fn record_pull(&self, corp_id: &str, at: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "INSERT INTO cursors(corp_id, cursor, updated_at, last_pull_at) VALUES (?1, '', ?2, ?2)
                 ON CONFLICT(corp_id) DO UPDATE SET last_pull_at = excluded.last_pull_at",
            )?
            .execute(params![corp_id, at])?;
        Ok(())
    }

    fn pending_keys(
        &self,
        corp_id: &str,
        version: u32,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingKey>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT id, encrypted_secret_key FROM records
             WHERE corp_id = ?1 AND public_key_ver = ?2 AND decrypt_status = 'unknown_key_version' AND id > ?3
             ORDER BY id LIMIT ?4",
        )?;
        let rows = statement.query_map(params![corp_id, version, after_id, limit as i64], |row| {
            Ok(PendingKey {
                id: row.get(0)?,
                encrypted_secret_key: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn set_secret_keys(&self, updates: &[(i64, Result<String, DecryptStatus>)]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        {
            let mut statement =
                transaction.prepare_cached("UPDATE records SET secret_key = ?2, decrypt_status = ?3 WHERE id = ?1")?;
            for (id, outcome) in updates {
                match outcome {
                    Ok(secret_key) => statement.execute(params![id, secret_key, DecryptStatus::Ok])?,
                    Err(status) => statement.execute(params![id, Option::<String>::None, status])?,
                };
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn archive_retry_candidates(
        &self,
        corp_id: &str,
        after_id: i64,
        max_attempts: u32,
        with_pending: bool,
        limit: usize,
    ) -> Result<Vec<ArchiveRetry>, StoreError> {
        let connection = self.lock();
        let transient = ["sdk_error_10001", "sdk_error_10002", "sdk_error_10003", "sdk_error_10008"];
        let retryable: Vec<&str> = transient.into_iter().chain(with_pending.then_some("pending")).collect();
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM archive_content a INDEXED BY archive_not_ok CROSS JOIN records r ON r.id = a.record_id
             WHERE a.corp_id = ?1 AND a.content_status <> 'ok' AND a.record_id > ?2
               AND (a.attempts < ?3 OR a.content_status = 'pending')
               AND a.content_status IN ({})
             ORDER BY a.record_id LIMIT ?4",
            retryable.iter().map(|status| format!("'{status}'")).collect::<Vec<_>>().join(", ")
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params![corp_id, after_id, max_attempts, limit as i64], stored_record)?;
        Ok(rows
            .map(|row| row.map(|stored| ArchiveRetry { id: stored.id, record: stored.record }))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn set_archive_content(&self, corp_id: &str, updates: &[ArchiveRetry]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let now = unix_now();
        for update in updates {
            let Some(archive) = &update.record.archive else { continue };
            let before: Option<ContentStatus> = transaction
                .prepare_cached("SELECT content_status FROM archive_content WHERE record_id = ?1 AND corp_id = ?2")?
                .query_row(params![update.id, corp_id], |row| row.get(0))
                .optional()?;
            let Some(before) = before else { continue };
            let record = &update.record;
            transaction
                .prepare_cached(
                    "UPDATE records SET sender_type = ?2, sender_id = ?3, receivers = ?4, chatid = ?5, conversation = ?6,
                            send_time = ?7, msgtype = ?8, secret_key = ?9, decrypt_status = ?10
                     WHERE id = ?1",
                )?
                .execute(params![
                    update.id,
                    record.sender_type,
                    record.sender_id,
                    record.receivers,
                    record.chatid,
                    record.conversation,
                    record.send_time,
                    record.msgtype,
                    record.secret_key,
                    record.decrypt_status
                ])?;
            transaction
                .prepare_cached(&format!(
                    "UPDATE archive_content SET action = ?2, msgtype = ?3, msgtime = ?4, content = ?5,
                            content_status = ?6, attempts = ?7, updated_at = ?8, search_rev = {NEXT_SEARCH_REV}
                     WHERE record_id = ?1"
                ))?
                .execute(params![
                    update.id,
                    archive.action,
                    archive.msgtype,
                    archive.msgtime,
                    archive.content,
                    archive.content_status,
                    archive.attempts,
                    now
                ])?;
            if before != archive.content_status {
                count_content(&transaction, corp_id, before, -1)?;
                count_content(&transaction, corp_id, archive.content_status, 1)?;
            }
            if before != ContentStatus::Ok && archive.content_status == ContentStatus::Ok {
                index_record(&transaction, corp_id, update.id, record)?;
                queue_media(&transaction, corp_id, record, archive)?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn set_archive_error(&self, corp_id: &str, error: Option<(i64, i64)>) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "INSERT INTO cursors(corp_id, cursor, updated_at, archive_error_code, archive_error_at)
                 VALUES (?1, '', ?4, ?2, ?3)
                 ON CONFLICT(corp_id) DO UPDATE SET archive_error_code = excluded.archive_error_code,
                     archive_error_at = excluded.archive_error_at",
            )?
            .execute(params![corp_id, error.map(|(code, _)| code), error.map(|(_, at)| at), unix_now()])?;
        Ok(())
    }

    fn record(&self, corp_id: &str, msgid: &str) -> Result<Option<StoredRecord>, StoreError> {
        let connection = self.lock();
        let sql =
            format!("SELECT {RECORD_COLUMNS} FROM records r {ARCHIVE_JOIN} WHERE r.corp_id = ?1 AND r.msgid = ?2");
        let mut statement = connection.prepare_cached(&sql)?;
        let record = statement.query_row([corp_id, msgid], stored_record).optional()?;
        Ok(record)
    }

    fn ingest_status(&self, corp_id: &str) -> Result<IngestStatus, StoreError> {
        let connection = self.lock();
        let (cursor, last_pull_at, error_code, error_at) = connection
            .prepare_cached(
                "SELECT cursor, last_pull_at, archive_error_code, archive_error_at FROM cursors WHERE corp_id = ?1",
            )?
            .query_row([corp_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                ))
            })
            .optional()?
            .unwrap_or_default();
        let content = connection
            .prepare_cached(
                "SELECT content_status, records FROM archive_stats WHERE corp_id = ?1 AND records > 0
                 ORDER BY content_status",
            )?
            .query_map([corp_id], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let (stored, pages) = connection
            .prepare_cached("SELECT stored, pages FROM corp_stats WHERE corp_id = ?1")?
            .query_row([corp_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?
            .unwrap_or((0, 0));
        let newest_send_time = connection
            .prepare_cached("SELECT max(send_time) FROM records WHERE corp_id = ?1")?
            .query_row([corp_id], |row| row.get(0))?;
        // The partial index holds only records without a key: the count never reads the others.
        let mut statement = connection.prepare_cached(
            "SELECT decrypt_status, count(*) FROM records INDEXED BY records_pending
             WHERE corp_id = ?1 AND decrypt_status <> 'ok' GROUP BY decrypt_status ORDER BY decrypt_status",
        )?;
        let failed = statement.query_map([corp_id], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
        let dead_letter_notifications = connection
            .prepare_cached("SELECT count(*) FROM mailbox WHERE state = ?2 AND corp_id = ?1")?
            .query_row(params![corp_id, MailboxState::DeadLetter], |row| row.get(0))?;
        let dead_letter_jobs = connection
            .prepare_cached("SELECT count(*) FROM jobs WHERE state = ?2 AND corp_id = ?1")?
            .query_row(params![corp_id, JobState::DeadLetter], |row| row.get(0))?;
        Ok(IngestStatus {
            cursor: Some(cursor).filter(|cursor| !cursor.is_empty()),
            last_pull_at,
            stored,
            failed,
            pages,
            newest_send_time,
            dead_letter_notifications,
            dead_letter_jobs,
            content,
            archive_error: error_code.zip(error_at),
        })
    }

    fn list_messages(&self, corp_id: &str, filter: &MessageFilter) -> Result<Vec<StoredRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&list_messages_sql(filter))?;
        let rows = statement.query_map(
            params![
                corp_id,
                filter.after_id,
                filter.chatid,
                filter.userid,
                filter.external_userid,
                filter.msgtype,
                filter.begin_time,
                filter.end_time,
                i64::try_from(filter.limit).unwrap_or(i64::MAX)
            ],
            stored_record,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn list_conversations(
        &self,
        corp_id: &str,
        userid: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let connection = self.lock();
        // Both read the counters kept at commit; with a userid the walk starts from that party's
        // conversations.
        let sql = if userid.is_some() {
            "SELECT c.conversation, c.message_count, c.last_send_time, c.newest_id
             FROM conversation_parties cp
             CROSS JOIN conversations c ON c.corp_id = cp.corp_id AND c.conversation = cp.conversation
             WHERE cp.corp_id = ?1 AND cp.party_id = ?3 AND cp.conversation > ?2
             ORDER BY cp.conversation LIMIT ?4"
        } else {
            "SELECT conversation, message_count, last_send_time, newest_id FROM conversations
             WHERE corp_id = ?1 AND conversation > ?2 ORDER BY conversation LIMIT ?4"
        };
        let mut statement = connection.prepare_cached(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let groups: Vec<(String, i64, i64, i64)> = statement
            .query_map(params![corp_id, after.unwrap_or(""), userid, limit], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut newest = connection.prepare_cached("SELECT chatid, sender_id, receivers FROM records WHERE id = ?1")?;
        let mut conversations = Vec::with_capacity(groups.len());
        for (key, message_count, last_send_time, newest_id) in groups {
            let (chatid, sender, receivers): (Option<String>, String, String) =
                newest.query_row([newest_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            let mut participants: Vec<String> = parties_of(&receivers).into_iter().map(|(_, id)| id).collect();
            participants.push(sender);
            participants.sort();
            participants.dedup();
            conversations.push(Conversation { key, chatid, participants, last_send_time, message_count });
        }
        Ok(conversations)
    }
}

/// `list_messages` as SQL for the filters present, so that each shape uses its index: a
/// `userid`/`external_userid` walks that party's records in id order (`record_parties`), a
/// `chatid` walks the chat's (`records_chat`), anything else the corp's records by id
/// (`records_keyset`). Parameters keep their numbers (?1 corp … ?9 limit) whichever are used.
fn list_messages_sql(filter: &MessageFilter) -> String {
    let columns = RECORD_COLUMNS;
    let driving_party = match (&filter.userid, &filter.external_userid) {
        (Some(_), _) => Some((1, "?4")),
        (None, Some(_)) => Some((2, "?5")),
        (None, None) => None,
    };
    let mut sql = match driving_party {
        Some((party_type, party)) => format!(
            "SELECT {columns} FROM record_parties p CROSS JOIN records r ON r.id = p.record_id {ARCHIVE_JOIN}
             WHERE p.corp_id = ?1 AND p.party_type = {party_type} AND p.party_id = {party} AND p.record_id > ?2"
        ),
        None if narrow_window(filter) && filter.chatid.is_none() => {
            format!(
                "SELECT {columns} FROM records r INDEXED BY records_send_time {ARCHIVE_JOIN}
                 WHERE r.corp_id = ?1 AND r.id > ?2"
            )
        }
        None => format!("SELECT {columns} FROM records r {ARCHIVE_JOIN} WHERE r.corp_id = ?1 AND r.id > ?2"),
    };
    if filter.userid.is_some() && filter.external_userid.is_some() {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM record_parties q
              WHERE q.corp_id = ?1 AND q.party_type = 2 AND q.party_id = ?5 AND q.record_id = r.id)",
        );
    }
    for (present, clause) in [
        (filter.chatid.is_some(), " AND r.chatid = ?3"),
        (filter.msgtype.is_some(), " AND r.msgtype = ?6"),
        (filter.begin_time.is_some(), " AND r.send_time >= ?7"),
        (filter.end_time.is_some(), " AND r.send_time <= ?8"),
    ] {
        if present {
            sql.push_str(clause);
        }
    }
    sql.push_str(if driving_party.is_some() { " ORDER BY p.record_id LIMIT ?9" } else { " ORDER BY r.id LIMIT ?9" });
    sql
}

/// A time window of at most a week is read through the send_time index and its rows sorted by id;
/// a wider or open one walks the corp's records in id order (ingest order follows time, so the
/// walk reaches the window soon), where sorting the window would cost more than the walk.
fn narrow_window(filter: &MessageFilter) -> bool {
    const WEEK_S: i64 = 7 * 86_400;
    match (filter.begin_time, filter.end_time) {
        (Some(begin), Some(end)) => end.saturating_sub(begin) <= WEEK_S,
        _ => false,
    }
}

/// `(type, id)` of each receiver in a record's `receivers` JSON.
fn parties_of(receivers: &str) -> Vec<(i64, String)> {
    serde_json::from_str::<Vec<serde_json::Value>>(receivers)
        .unwrap_or_default()
        .iter()
        .filter_map(|party| Some((party["type"].as_i64().unwrap_or(0), party["id"].as_str()?.to_owned())))
        .collect()
}

impl SearchStore for SqliteStore {
    fn search_changes(&self, after: SearchMark, limit: usize) -> Result<Vec<SearchChange>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT search_rev, record_id, corp_id, msgtime, msgtype, CASE WHEN content_status = 'ok' THEN content END
             FROM archive_content INDEXED BY archive_search_feed
             WHERE (search_rev, record_id) > (?1, ?2)
             ORDER BY search_rev, record_id LIMIT ?3",
        )?;
        let rows = statement.query_map(params![after.rev, after.record_id, limit as i64], |row| {
            Ok(SearchChange {
                mark: SearchMark { rev: row.get(0)?, record_id: row.get(1)? },
                corp_id: row.get(2)?,
                msgtime: row.get(3)?,
                msgtype: row.get(4)?,
                content: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn store_identity(&self) -> Result<String, StoreError> {
        let connection = self.lock();
        Ok(connection.prepare_cached("SELECT id FROM store_identity")?.query_row([], |row| row.get(0))?)
    }

    fn search_head(&self) -> Result<SearchMark, StoreError> {
        let connection = self.lock();
        let head = connection
            .prepare_cached(
                "SELECT search_rev, record_id FROM archive_content INDEXED BY archive_search_feed
                 ORDER BY search_rev DESC, record_id DESC LIMIT 1",
            )?
            .query_row([], |row| Ok(SearchMark { rev: row.get(0)?, record_id: row.get(1)? }))
            .optional()?;
        Ok(head.unwrap_or_default())
    }

    fn search_backlog(&self, after: SearchMark) -> Result<u64, StoreError> {
        let connection = self.lock();
        let count: i64 = connection
            .prepare_cached("SELECT count(*) FROM archive_content WHERE (search_rev, record_id) > (?1, ?2)")?
            .query_row(params![after.rev, after.record_id], |row| row.get(0))?;
        Ok(count as u64)
    }

    fn search_rows(&self, corp_id: &str, record_ids: &[i64]) -> Result<Vec<SearchRow>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT a.record_id, r.msgid, a.seq, a.msgtime, a.msgtype, CASE WHEN a.content_status = 'ok' THEN a.content END,
                    EXISTS (SELECT 1 FROM archive_content recall INDEXED BY archive_recalls
                            WHERE recall.corp_id = a.corp_id AND recall.msgtype = 'revoke'
                              AND (CASE WHEN json_valid(recall.content) THEN json_extract(recall.content, '$.revoke.pre_msgid') END) = r.msgid)
             FROM archive_content a JOIN records r ON r.id = a.record_id
             WHERE a.record_id = ?1 AND a.corp_id = ?2",
        )?;
        let mut rows = Vec::with_capacity(record_ids.len());
        for &record_id in record_ids {
            let row = statement
                .query_row(params![record_id, corp_id], |row| {
                    Ok(SearchRow {
                        record_id: row.get(0)?,
                        msgid: row.get(1)?,
                        seq: row.get::<_, i64>(2)? as u64,
                        msgtime: row.get(3)?,
                        msgtype: row.get(4)?,
                        content: row.get(5)?,
                        recalled: row.get(6)?,
                    })
                })
                .optional()?;
            rows.extend(row);
        }
        Ok(rows)
    }
}

/// The baseline a user would otherwise write: `LIKE` over the stored content. For `bench search`
/// only; the index answers real searches.
#[derive(Debug, Clone, Default)]
pub struct LikeQuery {
    pub corp_id: String,
    /// Each must occur in the content (SQLite's LIKE: ASCII case-insensitive).
    pub terms: Vec<String>,
    pub userid: Option<String>,
    pub roomid: Option<String>,
    pub msgtype: Option<String>,
    /// Milliseconds, inclusive.
    pub msgtime_range: Option<(i64, i64)>,
    pub limit: usize,
}

impl SqliteStore {
    /// The record ids a `LIKE` scan finds for `query`, newest first.
    pub fn like_scan(&self, query: &LikeQuery) -> Result<Vec<i64>, StoreError> {
        let mut sql = String::from("SELECT record_id FROM archive_content WHERE corp_id = ? AND content_status = 'ok'");
        let mut values: Vec<rusqlite::types::Value> = vec![query.corp_id.clone().into()];
        for term in &query.terms {
            sql.push_str(" AND content LIKE ? ESCAPE '\\'");
            let escaped = term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            values.push(format!("%{escaped}%").into());
        }
        if let Some(userid) = &query.userid {
            sql.push_str(
                " AND (json_extract(content, '$.from') = ?1x OR EXISTS (SELECT 1 FROM json_each(content, '$.tolist') WHERE value = ?1x))",
            );
            let placeholder = format!("?{}", values.len() + 1);
            sql = sql.replace("?1x", &placeholder);
            values.push(userid.clone().into());
        }
        if let Some(roomid) = &query.roomid {
            sql.push_str(" AND json_extract(content, '$.roomid') = ?");
            values.push(roomid.clone().into());
        }
        if let Some(msgtype) = &query.msgtype {
            sql.push_str(" AND msgtype = ?");
            values.push(msgtype.clone().into());
        }
        if let Some((low, high)) = query.msgtime_range {
            sql.push_str(" AND msgtime BETWEEN ? AND ?");
            values.push(low.into());
            values.push(high.into());
        }
        sql.push_str(" ORDER BY msgtime DESC, record_id DESC LIMIT ?");
        values.push((query.limit as i64).into());
        let connection = self.lock();
        let mut statement = connection.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| row.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

impl MediaStore for SqliteStore {
    fn media_next_due(&self, now_ms: i64) -> Result<Option<MediaEntry>, StoreError> {
        let connection = self.lock();
        let sql = format!(
            "SELECT {MEDIA_COLUMNS} FROM media INDEXED BY media_due
             WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY expires_at, id LIMIT 1"
        );
        Ok(connection.prepare_cached(&sql)?.query_row([now_ms], media_entry).optional()?)
    }

    fn media_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        let mut statement =
            connection.prepare_cached("SELECT min(next_attempt_at) FROM media WHERE status = 'pending'")?;
        Ok(statement.query_row([], |row| row.get(0))?)
    }

    fn media_progress(&self, id: i64, outindexbuf: &str, downloaded: u64) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("UPDATE media SET outindexbuf = ?2, downloaded = ?3 WHERE id = ?1")?
            .execute(params![id, outindexbuf, downloaded as i64])?;
        Ok(())
    }

    fn media_finish(&self, id: i64, outcome: &MediaOutcome) -> Result<(), StoreError> {
        let connection = self.lock();
        match outcome {
            MediaOutcome::Stored { md5, size } => connection
                .prepare_cached(
                    "UPDATE media SET status = ?2, stored_md5 = ?3, stored_size = ?4, outindexbuf = '', downloaded = 0
                     WHERE id = ?1",
                )?
                .execute(params![id, MediaStatus::Stored, md5, *size as i64])?,
            MediaOutcome::Failed | MediaOutcome::TooLarge => {
                let status = if *outcome == MediaOutcome::Failed { MediaStatus::Failed } else { MediaStatus::TooLarge };
                connection
                    .prepare_cached("UPDATE media SET status = ?2, outindexbuf = '', downloaded = 0 WHERE id = ?1")?
                    .execute(params![id, status])?
            }
            MediaOutcome::Retry { at_ms, restart: true } => connection
                .prepare_cached(
                    "UPDATE media SET attempts = attempts + 1, next_attempt_at = ?2, outindexbuf = '', downloaded = 0
                     WHERE id = ?1",
                )?
                .execute(params![id, at_ms])?,
            MediaOutcome::Retry { at_ms, restart: false } => connection
                .prepare_cached("UPDATE media SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1")?
                .execute(params![id, at_ms])?,
        };
        Ok(())
    }

    fn media_of(&self, corp_id: &str, msgid: &str) -> Result<Option<MediaEntry>, StoreError> {
        let connection = self.lock();
        let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE corp_id = ?1 AND msgid = ?2 ORDER BY item LIMIT 1");
        Ok(connection.prepare_cached(&sql)?.query_row(params![corp_id, msgid], media_entry).optional()?)
    }
}

fn media_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<MediaEntry> {
    Ok(MediaEntry {
        id: row.get(0)?,
        corp_id: row.get(1)?,
        msgid: row.get(2)?,
        sdkfileid: row.get(3)?,
        md5sum: row.get(4)?,
        size: row.get::<_, i64>(5)?.max(0) as u64,
        filename: row.get(6)?,
        status: row.get(7)?,
        expires_at: row.get(8)?,
        outindexbuf: row.get(9)?,
        downloaded: row.get::<_, i64>(10)?.max(0) as u64,
        attempts: row.get(11)?,
        stored_md5: row.get(12)?,
        stored_size: row.get::<_, Option<i64>>(13)?.map(|size| size.max(0) as u64),
    })
}

impl MailboxStore for SqliteStore {
    fn mailbox_insert(&self, entry: &NewMailboxEntry, now: i64) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        mailbox_insert_in(&connection, entry, now)
    }

    fn stored_since(&self, corp_id: &str, mailbox_id: i64) -> Result<StoredSince, StoreError> {
        let connection = self.lock();
        let mark: Option<i64> = connection
            .prepare_cached("SELECT pull_mark FROM mailbox WHERE id = ?1")?
            .query_row([mailbox_id], |row| row.get(0))
            .optional()?
            .flatten();
        let mut statement = connection.prepare_cached(
            "SELECT count(*), count(DISTINCT conversation), min(send_time), max(send_time),
                    coalesce(sum(decrypt_status <> 'ok'), 0)
             FROM records WHERE corp_id = ?1 AND id > ?2",
        )?;
        Ok(statement.query_row(params![corp_id, mark.unwrap_or(i64::MAX)], |row| {
            Ok(StoredSince {
                records: row.get(0)?,
                conversations: row.get(1)?,
                begin_time: row.get(2)?,
                end_time: row.get(3)?,
                without_secret_key: row.get(4)?,
            })
        })?)
    }

    fn mailbox_awaiting_pull(&self, corp_id: &str) -> Result<Vec<i64>, StoreError> {
        let connection = self.lock();
        let mut statement =
            connection.prepare_cached("SELECT id FROM mailbox WHERE corp_id = ?1 AND state = ?2 ORDER BY id")?;
        let ids = statement.query_map(params![corp_id, MailboxState::AwaitingPull], |row| row.get(0))?;
        Ok(ids.collect::<Result<Vec<_>, _>>()?)
    }

    fn mailbox_entry(&self, id: i64) -> Result<Option<MailboxEntry>, StoreError> {
        let connection = self.lock();
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailbox WHERE id = ?1");
        Ok(connection.prepare_cached(&sql)?.query_row([id], mailbox_entry).optional()?)
    }

    fn mailbox_finish_pull(&self, id: i64, payload: &str) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("UPDATE mailbox SET payload = ?2, state = ?3 WHERE id = ?1 AND state = ?4")?
            .execute(params![id, payload, MailboxState::PendingNotify, MailboxState::AwaitingPull])?;
        Ok(())
    }

    fn mailbox_due_notifications(&self, now_ms: i64, limit: usize) -> Result<Vec<MailboxEntry>, StoreError> {
        let connection = self.lock();
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailbox WHERE state = ?1 AND next_attempt_at <= ?2
             ORDER BY next_attempt_at, id LIMIT ?3"
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params![MailboxState::PendingNotify, now_ms, limit as i64], mailbox_entry)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn mailbox_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached("SELECT min(next_attempt_at) FROM mailbox WHERE state = ?1")?;
        Ok(statement.query_row([MailboxState::PendingNotify], |row| row.get(0))?)
    }

    fn mailbox_set_notified(&self, id: i64, notify_id: &str, now: i64, expires_at: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "UPDATE mailbox SET notify_id = ?2, state = ?3, notified_at = ?4, expires_at = ?5,
                 notify_attempts = notify_attempts + 1 WHERE id = ?1",
            )?
            .execute(params![id, notify_id, MailboxState::Notified, now, expires_at])?;
        Ok(())
    }

    fn mailbox_notify_failed(&self, id: i64, retry_at_ms: Option<i64>) -> Result<(), StoreError> {
        let connection = self.lock();
        let state = if retry_at_ms.is_some() { MailboxState::PendingNotify } else { MailboxState::DeadLetter };
        connection
            .prepare_cached(
                "UPDATE mailbox SET notify_attempts = notify_attempts + 1, state = ?2,
                 next_attempt_at = coalesce(?3, next_attempt_at) WHERE id = ?1",
            )?
            .execute(params![id, state, retry_at_ms])?;
        Ok(())
    }

    fn mailbox_by_notify_id(
        &self,
        corp_id: &str,
        notify_id: &str,
        now: i64,
    ) -> Result<Option<MailboxEntry>, StoreError> {
        let connection = self.lock();
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailbox
             WHERE corp_id = ?1 AND notify_id = ?2 AND state <> ?3 AND (expires_at IS NULL OR expires_at > ?4)
             ORDER BY id LIMIT 1"
        );
        let mut statement = connection.prepare_cached(&sql)?;
        Ok(statement
            .query_row(params![corp_id, notify_id, MailboxState::AwaitingPull, now], mailbox_entry)
            .optional()?)
    }

    fn mailbox_record_fetch(&self, id: i64, page: u32, now: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("INSERT INTO mailbox_fetches(mailbox_id, page, fetched_at) VALUES (?1, ?2, ?3)")?
            .execute(params![id, page, now])?;
        Ok(())
    }

    fn mailbox_expire(&self, now: i64) -> Result<usize, StoreError> {
        let connection = self.lock();
        Ok(connection
            .prepare_cached("DELETE FROM mailbox WHERE state = ?1 AND expires_at <= ?2")?
            .execute(params![MailboxState::Notified, now])?)
    }
}

impl JobStore for SqliteStore {
    fn job_insert(&self, job: &NewJob, now: i64) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        let inserted = connection
            .prepare_cached(
                "INSERT INTO jobs(corp_id, agent_id, ability_id, notify_id, job_info, request_data, delivery_key,
                                  state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                job.corp_id.as_str(),
                job.agent_id,
                job.ability_id,
                job.notify_id.as_str(),
                job.job_info,
                job.request_data,
                job.delivery_key,
                JobState::Pending,
                now
            ])?;
        Ok((inserted == 1).then(|| connection.last_insert_rowid()))
    }

    fn jobs_unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.jobs_due(i64::MAX, usize::MAX)
    }

    fn jobs_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Job>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT id, corp_id, agent_id, ability_id, notify_id, job_info, request_data, delivery_key, state,
                    errcode, result, attempts
             FROM jobs WHERE state IN (?1, ?2) AND next_attempt_at <= ?3 ORDER BY next_attempt_at, id LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![JobState::Pending, JobState::Done, now_ms, limit], |row| {
            Ok(Job {
                id: row.get(0)?,
                call: NewJob {
                    corp_id: row.get::<_, String>(1)?.into(),
                    agent_id: row.get(2)?,
                    ability_id: row.get(3)?,
                    notify_id: row.get::<_, String>(4)?.into(),
                    job_info: row.get(5)?,
                    request_data: row.get(6)?,
                    delivery_key: row.get(7)?,
                },
                state: row.get(8)?,
                errcode: row.get(9)?,
                result: row.get(10)?,
                attempts: row.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn jobs_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        let mut statement =
            connection.prepare_cached("SELECT min(next_attempt_at) FROM jobs WHERE state IN (?1, ?2)")?;
        Ok(statement.query_row([JobState::Pending, JobState::Done], |row| row.get(0))?)
    }

    fn job_finish(
        &self,
        id: i64,
        errcode: i64,
        result: &str,
        kept: &NewMailboxEntry,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        transaction
            .prepare_cached("UPDATE jobs SET state = ?2, errcode = ?3, result = ?4, updated_at = ?5 WHERE id = ?1")?
            .execute(params![id, JobState::Done, errcode, result, now])?;
        let entry = mailbox_insert_in(&transaction, kept, now)?;
        transaction.commit()?;
        Ok(entry)
    }

    fn job_delivery_attempt(&self, id: i64, outcome: JobDelivery, now: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        let (state, retry_at) = match outcome {
            JobDelivery::Delivered => (JobState::Delivered, None),
            JobDelivery::RetryAt(at_ms) => (JobState::Done, Some(at_ms)),
            JobDelivery::DeadLetter => (JobState::DeadLetter, None),
        };
        connection
            .prepare_cached(
                "UPDATE jobs SET state = ?2, attempts = attempts + 1, updated_at = ?3,
                 next_attempt_at = coalesce(?4, next_attempt_at) WHERE id = ?1",
            )?
            .execute(params![id, state, now, retry_at])?;
        Ok(())
    }
}

fn mailbox_insert_in(connection: &Connection, entry: &NewMailboxEntry, now: i64) -> Result<Option<i64>, StoreError> {
    let state = if entry.awaiting_pull { MailboxState::AwaitingPull } else { MailboxState::PendingNotify };
    // An entry waiting for a pull remembers the newest record id now, so that its summary
    // covers exactly what was stored after the event arrived.
    let inserted = connection
        .prepare_cached(
            "INSERT INTO mailbox(corp_id, delivery_key, kind, notify_scene, payload, state, created_at, pull_mark,
                                 notify_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                     CASE WHEN ?8 THEN (SELECT coalesce(max(id), 0) FROM records) END, ?9)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            entry.corp_id.as_str(),
            entry.delivery_key,
            entry.kind,
            entry.notify_scene,
            entry.payload,
            state,
            now,
            entry.awaiting_pull,
            entry.notify_id.as_str()
        ])?;
    Ok((inserted == 1).then(|| connection.last_insert_rowid()))
}

fn mailbox_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxEntry> {
    Ok(MailboxEntry {
        id: row.get(0)?,
        corp_id: row.get::<_, String>(1)?.into(),
        kind: row.get(2)?,
        notify_scene: row.get(3)?,
        payload: row.get(4)?,
        state: row.get(5)?,
        notify_id: row.get::<_, Option<String>>(6)?.map(Into::into),
        created_at: row.get(7)?,
        notified_at: row.get(8)?,
        expires_at: row.get(9)?,
        notify_attempts: row.get(10)?,
        fetch_count: row.get(11)?,
    })
}

fn commit_page_in(transaction: &Transaction<'_>, page: &PageCommit) -> Result<PageOutcome, StoreError> {
    let now = unix_now();
    transaction
        .prepare_cached(
            "INSERT INTO pages(corp_id, cursor_in, cursor_out, n_records, n_inserted, first_msgid, last_msgid, committed_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
        )?
        .execute(params![
            page.corp_id,
            page.cursor_in,
            page.cursor_out,
            page.records.len() as i64,
            page.records.first().map(|record| record.msgid.as_str()),
            page.records.last().map(|record| record.msgid.as_str()),
            now
        ])?;
    let page_id = transaction.last_insert_rowid();
    let mut inserted = 0;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO records(corp_id, msgid, sender_type, sender_id, receivers, chatid, conversation, send_time,
                                 msgtype, public_key_ver, encrypted_secret_key, secret_key, decrypt_status,
                                 call_duration, raw, page_id, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT(corp_id, msgid) DO NOTHING",
        )?;
        for record in &page.records {
            let added = insert.execute(params![
                page.corp_id,
                record.msgid.as_str(),
                record.sender_type,
                record.sender_id,
                record.receivers,
                record.chatid,
                record.conversation,
                record.send_time,
                record.msgtype,
                record.public_key_ver,
                record.encrypted_secret_key,
                record.secret_key,
                record.decrypt_status,
                record.call_duration,
                record.raw,
                page_id,
                now
            ])?;
            if added == 1 {
                let id = transaction.last_insert_rowid();
                match &record.archive {
                    Some(archive) => {
                        insert_archive_content(transaction, &page.corp_id, id, archive, now)?;
                        if archive.content_status == ContentStatus::Ok {
                            index_record(transaction, &page.corp_id, id, record)?;
                            queue_media(transaction, &page.corp_id, record, archive)?;
                        }
                    }
                    None => index_record(transaction, &page.corp_id, id, record)?,
                }
                inserted += 1;
            }
        }
    }
    transaction
        .prepare_cached(
            "INSERT INTO corp_stats(corp_id, stored, pages) VALUES (?1, ?2, 1)
             ON CONFLICT(corp_id) DO UPDATE SET stored = stored + excluded.stored, pages = pages + 1",
        )?
        .execute(params![page.corp_id, inserted as i64])?;
    transaction
        .prepare_cached("UPDATE pages SET n_inserted = ?2 WHERE id = ?1")?
        .execute(params![page_id, inserted as i64])?;
    transaction
        .prepare_cached(
            "INSERT INTO cursors(corp_id, cursor, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(corp_id) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )?
        .execute(params![page.corp_id, page.cursor_out, now])?;
    Ok(PageOutcome { inserted, duplicates: page.records.len() - inserted })
}

/// What the abilities search by, kept with a new record in its page's transaction: its parties,
/// its conversation's counters, and who takes part in that conversation.
fn insert_archive_content(
    transaction: &Transaction<'_>,
    corp_id: &str,
    id: i64,
    archive: &ArchiveFields,
    now: i64,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(&format!(
            "INSERT INTO archive_content(record_id, corp_id, seq, action, msgtype, msgtime, content, content_status,
                                         attempts, updated_at, search_rev)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {NEXT_SEARCH_REV})"
        ))?
        .execute(params![
            id,
            corp_id,
            archive.seq as i64,
            archive.action,
            archive.msgtype,
            archive.msgtime,
            archive.content,
            archive.content_status,
            archive.attempts,
            now
        ])?;
    count_content(transaction, corp_id, archive.content_status, 1)
}

/// Queues a message's media files, each to expire three days after the message (WeCom keeps an
/// sdkfileid about that long).
fn queue_media(
    transaction: &Transaction<'_>,
    corp_id: &str,
    record: &NewRecord,
    archive: &ArchiveFields,
) -> Result<(), StoreError> {
    const SDKFILEID_LIFETIME_S: i64 = 3 * 86_400;
    let mut insert = transaction.prepare_cached(
        "INSERT OR IGNORE INTO media(corp_id, msgid, item, sdkfileid, md5sum, size, filename, status, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (item, media) in archive.media.iter().enumerate() {
        insert.execute(params![
            corp_id,
            record.msgid.as_str(),
            item as i64,
            media.sdkfileid,
            media.md5sum,
            media.size as i64,
            media.filename,
            MediaStatus::Pending,
            archive.msgtime.div_euclid(1000) + SDKFILEID_LIFETIME_S
        ])?;
    }
    Ok(())
}

fn count_content(
    transaction: &Transaction<'_>,
    corp_id: &str,
    status: ContentStatus,
    delta: i64,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "INSERT INTO archive_stats(corp_id, content_status, records) VALUES (?1, ?2, ?3)
             ON CONFLICT(corp_id, content_status) DO UPDATE SET records = records + excluded.records",
        )?
        .execute(params![corp_id, status, delta])?;
    Ok(())
}

fn index_record(transaction: &Transaction<'_>, corp_id: &str, id: i64, record: &NewRecord) -> Result<(), StoreError> {
    let mut parties = parties_of(&record.receivers);
    parties.push((record.sender_type, record.sender_id.clone()));
    let mut party = transaction.prepare_cached(
        "INSERT OR IGNORE INTO record_parties(corp_id, party_type, party_id, record_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (party_type, party_id) in &parties {
        party.execute(params![corp_id, party_type, party_id, id])?;
    }
    if record.conversation.is_empty() {
        return Ok(());
    }
    transaction
        .prepare_cached(
            "INSERT INTO conversations(corp_id, conversation, message_count, last_send_time, newest_id)
             VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT(corp_id, conversation) DO UPDATE SET message_count = message_count + 1,
                 last_send_time = max(last_send_time, excluded.last_send_time),
                 newest_id = max(newest_id, excluded.newest_id)",
        )?
        .execute(params![corp_id, record.conversation, record.send_time, id])?;
    let mut member = transaction.prepare_cached(
        "INSERT OR IGNORE INTO conversation_parties(corp_id, party_id, conversation) VALUES (?1, ?2, ?3)",
    )?;
    for (_, party_id) in &parties {
        member.execute(params![corp_id, party_id, record.conversation])?;
    }
    Ok(())
}

/// The columns of `RECORD_COLUMNS`, in order, into a record.
fn stored_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        id: row.get(0)?,
        record: NewRecord {
            msgid: row.get::<_, String>(1)?.into(),
            sender_type: row.get(2)?,
            sender_id: row.get(3)?,
            receivers: row.get(4)?,
            chatid: row.get(5)?,
            conversation: row.get(6)?,
            send_time: row.get(7)?,
            msgtype: row.get(8)?,
            public_key_ver: row.get(9)?,
            encrypted_secret_key: row.get(10)?,
            secret_key: row.get(11)?,
            decrypt_status: row.get(12)?,
            call_duration: row.get(13)?,
            raw: row.get(14)?,
            archive: archive_fields(row, 16)?,
        },
        stored_at: row.get(15)?,
    })
}

/// The archive columns from `first` on, when the record has them.
fn archive_fields(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<ArchiveFields>> {
    let Some(seq) = row.get::<_, Option<i64>>(first)? else { return Ok(None) };
    Ok(Some(ArchiveFields {
        seq: seq as u64,
        action: row.get(first + 1)?,
        msgtype: row.get(first + 2)?,
        msgtime: row.get(first + 3)?,
        content: row.get(first + 4)?,
        content_status: row.get(first + 5)?,
        attempts: row.get(first + 6)?,
        media: Vec::new(),
    }))
}

#[cfg(test)]
mod tests;
