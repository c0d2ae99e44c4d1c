//! Exactly-once across crashes: the real binary is killed with SIGKILL at random moments while it
//! ingests, restarted on the same database each time, and the store is checked at the end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wecom_zone::simulator::{Simulator, SplitMix};
use wecom_zone::store::{RecordStore, SqliteStore};

use crate::ingest::{CORP, assert_every_record_stored_once, service_config, simulator_config, vector_keys};

const MESSAGES: usize = 10_000;
const KILLS: usize = 12;

fn spawn_service(config_path: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wecom-zone"))
        .args(["serve", "--config"])
        .arg(config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stored(db: &std::path::Path) -> i64 {
    SqliteStore::open(db).unwrap().ingest_status(CORP).unwrap().stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let mut config = simulator_config(MESSAGES, publics);
    config.page_delay = Duration::from_millis(15);
    let simulator = Simulator::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let config_path = dir.path().join("wecom-zone.toml");
    std::fs::write(&config_path, service_config(&simulator, &privates, &db, 40)).unwrap();

    let mut rng = SplitMix::new(0xc0ffee);
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let before = stored(&db);
        let mut child = spawn_service(&config_path);
        // Kill at a random moment once this life has committed something, so that every kill
        // lands mid-ingest (possibly mid-commit) however fast or slow the machine is.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(&db) == before {
            assert!(Instant::now() < deadline, "no progress after a restart: {progress:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(150) as u64)).await;
        child.kill().unwrap(); // SIGKILL: no destructor, no graceful shutdown
        child.wait().unwrap();
        progress.push(stored(&db));
    }
    assert!(progress.windows(2).all(|pair| pair[0] < pair[1]), "every life made progress: {progress:?}");
    assert!(*progress.last().unwrap() < MESSAGES as i64, "every kill landed mid-ingest: {progress:?}");

    let mut child = spawn_service(&config_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored(&db) < MESSAGES as i64 {
        assert!(Instant::now() < deadline, "ingest did not finish after the crashes: {progress:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    assert_every_record_stored_once(&store, &simulator, &[1, 2]);
}

/// The classic archive under SIGKILL: the service (and with it, the finance worker) killed at
/// random moments mid-pull, ten times; at the end every record is stored once with its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_archive_pull_loses_and_duplicates_nothing() {
    use crate::archive::{ArchiveFixture, CORP as ARCHIVE_CORP};
    use wecom_zone::domain::ContentStatus;
    use wecom_zone::simulator::archive::ChatFault;

    const ARCHIVE_MESSAGES: usize = 3_000;
    const ARCHIVE_KILLS: usize = 10;
    let fixture = ArchiveFixture::new(ARCHIVE_MESSAGES, 0).await;
    // Every GetChatData takes 15 ms (a network between the SDK and WeCom).
    fixture.simulator.script_chat(vec![ChatFault::SlowMs(15); 100_000]);
    let config_path = fixture.dir.path().join("wecom-zone.toml");
    std::fs::write(&config_path, fixture.config(40, 5000)).unwrap();
    let db = fixture.db();
    let stored = |db: &std::path::Path| {
        if !db.exists() {
            return 0;
        }
        SqliteStore::open(db).unwrap().ingest_status(ARCHIVE_CORP).unwrap().stored
    };

    let mut rng = SplitMix::new(0xa5c1);
    let mut progress = Vec::new();
    for _ in 0..ARCHIVE_KILLS {
        let before = stored(&db);
        let mut child = spawn_service(&config_path);
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(&db) == before {
            assert!(Instant::now() < deadline, "no progress after a restart: {progress:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(150) as u64)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        progress.push(stored(&db));
    }
    assert!(*progress.last().unwrap() < ARCHIVE_MESSAGES as i64, "every kill landed mid-pull: {progress:?}");

    let mut child = spawn_service(&config_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored(&db) < ARCHIVE_MESSAGES as i64 {
        assert!(Instant::now() < deadline, "the pull did not finish after the crashes: {progress:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let status = store.ingest_status(ARCHIVE_CORP).unwrap();
    assert_eq!(status.stored, ARCHIVE_MESSAGES as i64, "nothing doubled");
    assert_eq!(status.cursor.as_deref(), Some("3000"));
    for record in fixture.simulator.records() {
        let stored =
            store.record(ARCHIVE_CORP, &record.msgid).unwrap().unwrap_or_else(|| panic!("seq {} lost", record.seq));
        let archive = stored.record.archive.unwrap();
        assert_eq!((archive.seq, archive.content_status), (record.seq, ContentStatus::Ok), "seq {}", record.seq);
    }
}

/// A media download killed mid-file resumes from its last stored chunk: the file is asked for
/// from its first byte once only, and what is kept is WeCom's file exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_download_killed_mid_file_resumes_from_its_last_chunk() {
    use crate::archive::{ArchiveFixture, CORP as ARCHIVE_CORP};
    use wecom_zone::domain::MediaStatus;
    use wecom_zone::store::MediaStore;

    const FILE_BYTES: usize = 3 * 1024 * 1024; // six chunks
    let fixture = ArchiveFixture::new(2, FILE_BYTES).await; // seq 1 text, seq 2 image (the big file)
    fixture.simulator.set_media_delay(Duration::from_millis(200));
    let config_path = fixture.dir.path().join("wecom-zone.toml");
    std::fs::write(&config_path, fixture.config(10, 5000)).unwrap();
    let (msgid, sdkfileid, md5sum, size) = fixture.media_messages().remove(0);
    assert_eq!(size as usize, FILE_BYTES);
    let db = fixture.db();
    let entry = || {
        if !db.exists() {
            return None;
        }
        SqliteStore::open(&db).unwrap().media_of(ARCHIVE_CORP, &msgid).unwrap()
    };

    let mut child = spawn_service(&config_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while entry().is_none_or(|entry| entry.downloaded < 2 * 512 * 1024) {
        assert!(Instant::now() < deadline, "the download never made progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let paused = entry().unwrap();
    assert!(paused.downloaded < FILE_BYTES as u64, "killed mid-file");

    let mut child = spawn_service(&config_path);
    while entry().is_none_or(|entry| entry.status == MediaStatus::Pending) {
        assert!(Instant::now() < deadline, "the download did not finish after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = entry().unwrap();
    assert_eq!((done.status, done.stored_md5.as_deref()), (MediaStatus::Stored, Some(md5sum.as_str())));
    let requests = fixture.simulator.media_requests();
    assert_eq!(requests.iter().filter(|(id, offset)| *id == sdkfileid && *offset == 0).count(), 1, "{requests:?}");
    assert!(requests.len() <= 7, "at most one chunk asked for twice: {requests:?}");
    let kept = std::fs::read(fixture.media_dir().join(&md5sum[..2]).join(&md5sum)).unwrap();
    assert_eq!(kept, fixture.simulator.media(&sdkfileid).unwrap());
}
