use super::*;

fn record(msgid: &str, status: DecryptStatus, version: u32) -> NewRecord {
    NewRecord {
        msgid: msgid.into(),
        sender_type: 1,
        sender_id: "zhangsan".into(),
        receivers: r#"[{"type":2,"id":"wmEXT"}]"#.into(),
        chatid: None,
        conversation: "wmEXT|zhangsan".into(),
        send_time: 1_700_000_000,
        msgtype: 1,
        public_key_ver: Some(version),
        encrypted_secret_key: Some("ZW5j".into()),
        secret_key: (status == DecryptStatus::Ok).then(|| "secret".to_owned()),
        decrypt_status: status,
        call_duration: None,
        raw: format!(r#"{{"msgid":"{msgid}"}}"#),
        archive: None,
    }
}

fn page(cursor_in: Option<&str>, cursor_out: &str, records: Vec<NewRecord>) -> PageCommit {
    PageCommit {
        corp_id: "ww1".into(),
        cursor_in: cursor_in.map(str::to_owned),
        cursor_out: cursor_out.to_owned(),
        records,
    }
}

#[test]
fn a_page_commits_records_ledger_and_cursor_together() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(store.cursor("ww1").unwrap(), None);
    let outcome = store.commit_page(&page(
        None,
        "c1",
        vec![record("m1", DecryptStatus::Ok, 1), record("m2", DecryptStatus::Ok, 1)],
    ));
    assert_eq!(outcome.unwrap(), PageOutcome { inserted: 2, duplicates: 0 });
    assert_eq!(store.cursor("ww1").unwrap().as_deref(), Some("c1"));
    assert_eq!(store.cursor("ww2").unwrap(), None, "cursors are per corp");
    let stored = store.record("ww1", "m2").unwrap().unwrap();
    assert_eq!(stored.record, record("m2", DecryptStatus::Ok, 1));
    let status = store.ingest_status("ww1").unwrap();
    assert_eq!((status.stored, status.pages), (2, 1));
}

#[test]
fn a_page_delivered_again_changes_nothing_but_the_ledger() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.commit_page(&page(None, "c1", vec![record("m1", DecryptStatus::Ok, 1)])).unwrap();
    let mut changed = record("m1", DecryptStatus::Ok, 1);
    changed.sender_id = "someone else".into();
    let outcome = store.commit_page(&page(None, "c1", vec![changed, record("m2", DecryptStatus::Ok, 1)])).unwrap();
    assert_eq!(outcome, PageOutcome { inserted: 1, duplicates: 1 });
    assert_eq!(store.record("ww1", "m1").unwrap().unwrap().record.sender_id, "zhangsan");
    assert_eq!(store.ingest_status("ww1").unwrap().stored, 2);
}

#[test]
fn records_waiting_for_a_key_are_found_by_version_and_updated() {
    let store = SqliteStore::open_in_memory().unwrap();
    let records = vec![
        record("m1", DecryptStatus::UnknownKeyVersion, 3),
        record("m2", DecryptStatus::Ok, 1),
        record("m3", DecryptStatus::UnknownKeyVersion, 3),
        record("m4", DecryptStatus::UnknownKeyVersion, 4),
    ];
    store.commit_page(&page(None, "c1", records)).unwrap();
    let pending = store.pending_keys("ww1", 3, 0, 10).unwrap();
    assert_eq!(pending.len(), 2);
    let after_first = store.pending_keys("ww1", 3, pending[0].id, 10).unwrap();
    assert_eq!(after_first, vec![pending[1].clone()]);
    store
        .set_secret_keys(&[(pending[0].id, Ok("late".into())), (pending[1].id, Err(DecryptStatus::BadCiphertext))])
        .unwrap();
    let m1 = store.record("ww1", "m1").unwrap().unwrap().record;
    assert_eq!((m1.secret_key.as_deref(), m1.decrypt_status), (Some("late"), DecryptStatus::Ok));
    assert_eq!(store.record("ww1", "m3").unwrap().unwrap().record.decrypt_status, DecryptStatus::BadCiphertext);
    assert!(store.pending_keys("ww1", 3, 0, 10).unwrap().is_empty());
    let failed = store.ingest_status("ww1").unwrap().failed;
    assert_eq!(failed, vec![(DecryptStatus::BadCiphertext, 1), (DecryptStatus::UnknownKeyVersion, 1)]);
}

#[test]
fn the_schema_survives_reopening_and_refuses_newer_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/db.sqlite");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.commit_page(&page(None, "c9", vec![record("m1", DecryptStatus::Ok, 1)])).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.cursor("ww1").unwrap().as_deref(), Some("c9"));
    drop(store);
    let connection = Connection::open(&path).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::SchemaTooNew { found: 99, .. })));
}

#[cfg(unix)]
#[test]
fn the_database_and_its_wal_are_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let path = folder.join("db.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    store.commit_page(&page(None, "c1", vec![record("m1", DecryptStatus::Ok, 1)])).unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    for file in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
        assert_eq!(mode(&folder.join(file)), 0o600, "{file}");
    }
}

fn mailbox_entry_for(job_id: i64) -> NewMailboxEntry {
    NewMailboxEntry {
        corp_id: "ww1".into(),
        delivery_key: Some(format!("job:{job_id}").into_bytes()),
        kind: "async_result".into(),
        notify_scene: 50,
        payload: "{}".into(),
        awaiting_pull: false,
        notify_id: "wz1".into(),
    }
}

#[test]
fn a_job_result_and_its_mailbox_entry_are_kept_together_once() {
    let store = SqliteStore::open_in_memory().unwrap();
    let job = NewJob {
        corp_id: "ww1".into(),
        agent_id: 1,
        ability_id: "ingest_status".into(),
        notify_id: "n".into(),
        job_info: "j".into(),
        request_data: "{}".into(),
        delivery_key: None,
    };
    let id = store.job_insert(&job, 1).unwrap().unwrap();
    let entry = store.job_finish(id, 0, "{\"errcode\":0}", &mailbox_entry_for(id), 2).unwrap();
    assert!(entry.is_some());
    let kept = store.jobs_unfinished().unwrap();
    assert_eq!((kept[0].state, kept[0].result.as_deref()), (JobState::Done, Some("{\"errcode\":0}")));
    // Run again after a crash before delivery: the entry is not doubled.
    assert_eq!(store.job_finish(id, 0, "{\"errcode\":0}", &mailbox_entry_for(id), 3).unwrap(), None);
    assert_eq!(store.mailbox_due_notifications(i64::MAX, 10).unwrap().len(), 1);
}

#[test]
fn failed_notifications_wait_for_their_own_time_then_become_dead_letters() {
    let store = SqliteStore::open_in_memory().unwrap();
    let first = store.mailbox_insert(&mailbox_entry_for(1), 1).unwrap().unwrap();
    let second = store.mailbox_insert(&mailbox_entry_for(2), 1).unwrap().unwrap();
    store.mailbox_notify_failed(first, Some(5_000)).unwrap();
    let due: Vec<i64> = store.mailbox_due_notifications(1_000, 10).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(due, vec![second], "the failed entry waits; the newer one does not");
    assert_eq!(store.mailbox_next_attempt().unwrap(), Some(0));
    store.mailbox_notify_failed(second, None).unwrap();
    assert_eq!(store.mailbox_next_attempt().unwrap(), Some(5_000));
    let due: Vec<i64> = store.mailbox_due_notifications(5_000, 10).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(due, vec![first]);
    assert_eq!(store.ingest_status("ww1").unwrap().dead_letter_notifications, 1);
}
