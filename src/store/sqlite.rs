//! SQLite (bundled) in WAL mode. One connection behind a mutex serialises writers; every
//! statement is prepared once and cached.
//!
//! Durability: `synchronous = NORMAL` in WAL mode survives any process crash (the WAL is written
//! before the commit returns). A power loss may drop the last commits, but never a page without
//! its cursor or the reverse, so the pages are pulled again and nothing is lost or doubled.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{IngestStatus, NewRecord, PageCommit, PageOutcome, PendingKey, STATUS_OK, Store, StoreError, StoredRecord};

/// Embedded migrations, applied in order; `PRAGMA user_version` counts the applied ones.
/// (rusqlite_migration does the same but lags rusqlite releases, so these few lines stay here.)
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE records (
    id                   INTEGER PRIMARY KEY,
    corp_id              TEXT    NOT NULL,
    msgid                TEXT    NOT NULL,
    sender_type          INTEGER NOT NULL,
    sender_id            TEXT    NOT NULL,
    receivers            TEXT    NOT NULL,
    chatid               TEXT,
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
CREATE INDEX records_time ON records(corp_id, send_time);

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
"#];

pub struct SqliteStore {
    // A std Mutex: SQLite calls are blocking and run on blocking threads, never across an await.
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating the folder and file if needed) and migrates.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| StoreError::CreateDir { path: parent.to_path_buf(), source })?;
        }
        Self::from_connection(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut connection: Connection) -> Result<SqliteStore, StoreError> {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // 16 MiB of page cache keeps the msgid index hot while millions of records arrive.
        connection.pragma_update(None, "cache_size", -16_000)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.set_prepared_statement_cache_capacity(64);
        migrate(&mut connection)?;
        Ok(SqliteStore { connection: Mutex::new(connection) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if applied > supported {
        return Err(StoreError::SchemaTooNew { found: applied, supported });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

impl Store for SqliteStore {
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

    fn set_secret_keys(&self, updates: &[(i64, Result<String, &'static str>)]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        {
            let mut statement =
                transaction.prepare_cached("UPDATE records SET secret_key = ?2, decrypt_status = ?3 WHERE id = ?1")?;
            for (id, outcome) in updates {
                match outcome {
                    Ok(secret_key) => statement.execute(params![id, secret_key, STATUS_OK])?,
                    Err(status) => statement.execute(params![id, Option::<String>::None, status])?,
                };
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn record(&self, corp_id: &str, msgid: &str) -> Result<Option<StoredRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT id, msgid, sender_type, sender_id, receivers, chatid, send_time, msgtype, public_key_ver,
                    encrypted_secret_key, secret_key, decrypt_status, call_duration, raw, stored_at
             FROM records WHERE corp_id = ?1 AND msgid = ?2",
        )?;
        let record = statement
            .query_row([corp_id, msgid], |row| {
                let status: String = row.get(11)?;
                Ok(StoredRecord {
                    id: row.get(0)?,
                    record: NewRecord {
                        msgid: row.get(1)?,
                        sender_type: row.get(2)?,
                        sender_id: row.get(3)?,
                        receivers: row.get(4)?,
                        chatid: row.get(5)?,
                        send_time: row.get(6)?,
                        msgtype: row.get(7)?,
                        public_key_ver: row.get(8)?,
                        encrypted_secret_key: row.get(9)?,
                        secret_key: row.get(10)?,
                        decrypt_status: known_status(&status),
                        call_duration: row.get(12)?,
                        raw: row.get(13)?,
                    },
                    stored_at: row.get(14)?,
                })
            })
            .optional()?;
        Ok(record)
    }

    fn ingest_status(&self, corp_id: &str) -> Result<IngestStatus, StoreError> {
        let connection = self.lock();
        let (cursor, last_pull_at) = connection
            .prepare_cached("SELECT cursor, last_pull_at FROM cursors WHERE corp_id = ?1")?
            .query_row([corp_id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)))
            .optional()?
            .unwrap_or_default();
        let (stored, newest_send_time) = connection
            .prepare_cached("SELECT count(*), max(send_time) FROM records WHERE corp_id = ?1")?
            .query_row([corp_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let mut statement = connection.prepare_cached(
            "SELECT decrypt_status, count(*) FROM records WHERE corp_id = ?1 AND decrypt_status <> 'ok'
             GROUP BY decrypt_status ORDER BY decrypt_status",
        )?;
        let failed = statement.query_map([corp_id], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
        let pages = connection
            .prepare_cached("SELECT count(*) FROM pages WHERE corp_id = ?1")?
            .query_row([corp_id], |row| row.get(0))?;
        Ok(IngestStatus {
            cursor: Some(cursor).filter(|cursor| !cursor.is_empty()),
            last_pull_at,
            stored,
            failed,
            pages,
            newest_send_time,
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.lock().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
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
            page.records.first().map(|record| &record.msgid),
            page.records.last().map(|record| &record.msgid),
            now
        ])?;
    let page_id = transaction.last_insert_rowid();
    let mut inserted = 0;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO records(corp_id, msgid, sender_type, sender_id, receivers, chatid, send_time, msgtype,
                                 public_key_ver, encrypted_secret_key, secret_key, decrypt_status, call_duration,
                                 raw, page_id, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT(corp_id, msgid) DO NOTHING",
        )?;
        for record in &page.records {
            inserted += insert.execute(params![
                page.corp_id,
                record.msgid,
                record.sender_type,
                record.sender_id,
                record.receivers,
                record.chatid,
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
        }
    }
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

/// Maps a stored status back to the static strings records carry.
fn known_status(status: &str) -> &'static str {
    const KNOWN: [&str; 6] = [STATUS_OK, "unknown_key_version", "missing", "bad_base64", "bad_ciphertext", "not_utf8"];
    KNOWN.into_iter().find(|known| *known == status).unwrap_or("unknown")
}

#[cfg(test)]
mod tests;
