//! The classic archive end to end: the real service (HTTP on port 0, the puller, the RSA pool,
//! SQLite) drives the stand-in finance SDK in supervised worker processes against the archive
//! simulator on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wecom_zone::client::{Answer, ZoneClient};
use wecom_zone::domain::ContentStatus;
use wecom_zone::simulator::archive::{ArchiveSimulator, ChatFault};
use wecom_zone::simulator::stub_sdk;
use wecom_zone::store::{RecordStore, SqliteStore};

use crate::ingest::{RunningService, vector_keys};

pub const CORP: &str = "wwarchive00000001";
const ARCHIVE_SECRET: &str = "archiveSecretForTests0123456789abcdefghijk";
const TOKEN: &str = "archiveToken123";
const AES_KEY: &str = "kq0eyN1ygQdvpSfF5PH5nLZjMeI8cFSmj83LDUL4CsJ";

pub struct ArchiveFixture {
    pub simulator: ArchiveSimulator,
    pub dir: tempfile::TempDir,
    pub library: std::path::PathBuf,
}

impl ArchiveFixture {
    pub async fn new(messages: usize, media_max_bytes: usize) -> ArchiveFixture {
        let dir = tempfile::tempdir().unwrap();
        let library = stub_sdk::install(dir.path()).unwrap();
        let publics: Vec<(u32, String)> =
            vector_keys().into_iter().map(|(version, _, public)| (version, public)).collect();
        let simulator =
            ArchiveSimulator::start(CORP, ARCHIVE_SECRET, messages, &publics, media_max_bytes, 11).await.unwrap();
        ArchiveFixture { simulator, dir, library }
    }

    /// The service's config: one finance corp, pages of `page_limit`.
    pub fn config(&self, page_limit: u32, call_deadline_ms: u64) -> String {
        self.config_with_media_limit(page_limit, call_deadline_ms, 100 << 20)
    }

    pub fn config_with_media_limit(&self, page_limit: u32, call_deadline_ms: u64, max_file_bytes: u64) -> String {
        let keys: Vec<String> = vector_keys()
            .into_iter()
            .map(|(version, private, _)| format!("{{ version = {version}, pem = \"\"\"{private}\"\"\" }}"))
            .collect();
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = {db:?}
[upstream]
base_url = "http://127.0.0.1:9"
retry_base_ms = 5
retry_max_ms = 50
[ingest]
poll_interval_s = 0
[log]
level = "warn"
[finance_sdk]
library = {library:?}
proxy = "{proxy}"
timeout_s = 1
call_deadline_ms = {call_deadline_ms}
page_limit = {page_limit}
worker = {worker:?}
[media]
path = {media:?}
max_file_bytes = {max_file_bytes}
[search]
path = {search:?}
[[corp]]
corp_id = "{CORP}"
archive = "finance_sdk"
archive_secret = "{ARCHIVE_SECRET}"
token = "{TOKEN}"
encoding_aes_key = "{AES_KEY}"
private_keys = [ {keys} ]
"#,
            db = self.db().display().to_string(),
            library = self.library.display().to_string(),
            proxy = self.simulator.proxy(),
            worker = env!("CARGO_BIN_EXE_wecom-zone"),
            media = self.media_dir().display().to_string(),
            search = self.search_dir().display().to_string(),
            keys = keys.join(", "),
        )
    }

    pub fn search_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("search")
    }

    pub fn media_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("media")
    }

    /// `(msgid, sdkfileid, md5sum, size)` of every message with a media file of its own (the
    /// file's real size: WeCom declares none for some types).
    pub fn media_messages(&self) -> Vec<(String, String, String, u64)> {
        self.simulator
            .records()
            .iter()
            .filter_map(|record| {
                let message: Value = serde_json::from_str(&record.plaintext).unwrap();
                let msgtype = message["msgtype"].as_str().unwrap_or_default().to_owned();
                let media = wecom_zone::finance::content::media_refs(&msgtype, &message).into_iter().next()?;
                let size = self.simulator.media(&media.sdkfileid)?.len() as u64;
                Some((record.msgid.clone(), media.sdkfileid, media.md5sum, size))
            })
            .collect()
    }

    pub fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("archive.sqlite")
    }

    pub fn client(&self, service_url: &str) -> ZoneClient {
        ZoneClient::new(&format!("{service_url}/"), CORP, TOKEN, AES_KEY).unwrap()
    }
}

/// Waits until `count` records are stored, or panics after 60 s.
pub async fn wait_for_records(store: &dyn RecordStore, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = store.ingest_status(CORP).unwrap().stored;
        if stored >= count {
            return;
        }
        assert!(Instant::now() < deadline, "only {stored} of {count} records stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(store: &SqliteStore, msgid: &str) -> ContentStatus {
    store.record(CORP, msgid).unwrap().unwrap().record.archive.unwrap().content_status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_stored_once_with_its_content_and_crashers_are_parked() {
    const MESSAGES: usize = 250;
    let fixture = ArchiveFixture::new(MESSAGES, 0).await;
    let records = fixture.simulator.records();
    fixture.simulator.set_encrypt_chat_msg(10, "!SEGV".into());
    fixture.simulator.set_encrypt_chat_msg(20, "!ABRT".into());
    let foreign = records[29].plaintext.replace(&records[29].msgid, "someone-else");
    fixture.simulator.set_plaintext(30, &foreign);
    let mut damaged = records[39].encrypt_chat_msg.clone().into_bytes();
    damaged[8] = if damaged[8] == b'A' { b'B' } else { b'A' };
    fixture.simulator.set_encrypt_chat_msg(40, String::from_utf8(damaged).unwrap());
    fixture.simulator.set_encrypt_chat_msg(50, "!RC:10006".into());
    fixture.simulator.set_encrypt_chat_msg(60, "!HANG".into());
    fixture.simulator.set_encrypt_chat_msg(70, "!RC:10001".into());

    let service = RunningService::start(&fixture.config(100, 1000)).await;
    let client = fixture.client(&service.url);
    // While workers die, the service answers: health and an ability, every 20 ms.
    let watching = {
        let (url, client) = (service.url.clone(), fixture.client(&service.url));
        tokio::spawn(async move {
            let mut answered = 0;
            loop {
                let health = reqwest::get(format!("{url}/healthz")).await.unwrap().status();
                let Answer::Sealed(status) = client.call_ability("ingest_status", &json!({}), "", None).await.unwrap()
                else {
                    panic!("ingest_status was refused")
                };
                assert_eq!((health.as_u16(), &status["errcode"]), (200, &json!(0)));
                answered += 1;
                if status["stored_count"] == MESSAGES {
                    return answered;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_for_records(service.store.as_ref(), MESSAGES as i64).await;
    assert!(watching.await.unwrap() > 1, "the service was watched while it pulled");

    let expected = |seq: u64| match seq {
        10 | 20 | 60 => ContentStatus::Crashed,
        30 => ContentStatus::Invalid,
        50 => ContentStatus::SdkError(10006),
        70 => ContentStatus::SdkError(10001),
        _ => ContentStatus::Ok,
    };
    for record in &records {
        let status = status_of(&service.store, &record.msgid);
        if record.seq == 40 {
            // A damaged ciphertext decrypts to damaged bytes: invalid, or (if the damage missed
            // the structure) a message that still names the record.
            assert!(matches!(status, ContentStatus::Invalid | ContentStatus::Ok), "seq 40: {status}");
            continue;
        }
        assert_eq!(status, expected(record.seq), "seq {}", record.seq);
        if status == ContentStatus::Ok {
            let stored = service.store.record(CORP, &record.msgid).unwrap().unwrap();
            let archive = stored.record.archive.unwrap();
            assert_eq!(archive.seq, record.seq);
            let content: Value = serde_json::from_str(archive.content.as_deref().unwrap()).unwrap();
            assert_eq!(content, serde_json::from_str::<Value>(&record.plaintext).unwrap(), "seq {}", record.seq);
        }
    }
    let status = service.store.ingest_status(CORP).unwrap();
    assert_eq!(status.stored, MESSAGES as i64, "each record once");
    assert_eq!(status.cursor.as_deref(), Some("250"), "the seq after the last page");
    let versions: std::collections::BTreeSet<u32> = records.iter().map(|record| record.publickey_ver).collect();
    assert_eq!(versions.len(), 2, "the corpus spans both key versions");

    // The contract's fields, through the ability.
    let text = records.iter().find(|record| record.seq == 1).unwrap();
    let Answer::Sealed(answer) =
        client.call_ability("get_message", &json!({"msgid": text.msgid}), "", None).await.unwrap()
    else {
        panic!("get_message was refused")
    };
    let message = &answer["message"];
    let original: Value = serde_json::from_str(&text.plaintext).unwrap();
    assert_eq!(message["seq"], 1);
    assert_eq!(message["content"], original);
    assert_eq!(message["content_status"], "ok");
    assert_eq!(message["msgtype"], original["msgtype"]);
    assert_eq!(message["from"], original["from"]);
    assert_eq!(message["msgtime"], original["msgtime"]);
    assert_eq!(message["secret_key"], text.encrypt_key.as_str(), "secret_key is the RSA-decrypted encrypt_random_key");
    let Answer::Sealed(answer) = client.call_ability("ingest_status", &json!({}), "", None).await.unwrap() else {
        panic!("ingest_status was refused")
    };
    assert_eq!(answer["content_by_status"]["crashed"], 3, "{answer}");
    assert_eq!(answer["archive_error"], Value::Null);
    service.stop().await;
    // Stopping ends the finance workers too (stdin closed: each corp's SDK destroyed, then exit).
    let library = fixture.library.display().to_string();
    let left = std::process::Command::new("pgrep").args(["-f", &library]).output().unwrap();
    assert!(left.stdout.is_empty(), "finance workers outlived the service: {}", String::from_utf8_lossy(&left.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_or_refusing_get_chat_data_loses_nothing_and_says_what_to_fix() {
    const MESSAGES: usize = 120;
    let fixture = ArchiveFixture::new(MESSAGES, 0).await;
    // 10009 until the test has seen it reported (the IP is trusted later).
    let mut faults = vec![ChatFault::Segv, ChatFault::Abort, ChatFault::Hang];
    faults.extend(std::iter::repeat_n(ChatFault::Rc(10009), 10_000));
    fixture.simulator.script_chat(faults);
    let service = RunningService::start(&fixture.config(50, 1000)).await;
    // The first pull fails twice (SIGSEGV, then SIGABRT in the fresh worker): backoff, and the
    // next pull meets a hang and then 10009 (until the IP is trusted), which ingest_status explains.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = service.store.ingest_status(CORP).unwrap();
        if status.archive_error.is_some_and(|(code, _)| code == 10009) {
            break;
        }
        assert!(Instant::now() < deadline, "10009 never surfaced: {status:?}");
        assert_eq!(reqwest::get(format!("{}/healthz", service.url)).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = fixture.client(&service.url);
    let Answer::Sealed(answer) = client.call_ability("ingest_status", &json!({}), "", None).await.unwrap() else {
        panic!("ingest_status was refused")
    };
    assert_eq!(answer["archive_error"]["code"], 10009);
    assert!(answer["archive_error"]["hint"].as_str().unwrap().contains("可信IP"), "{answer}");
    // The IP is trusted now; msgaudit_notify starts the next pull, which succeeds: everything, once.
    fixture.simulator.clear_chat_faults();
    let event = wecom_zone::client::classic_event(CORP, "msgaudit_notify");
    let Answer::Text(reply) = client.send(&event, wecom_zone::crypto::EnvelopeFormat::Xml).await.unwrap() else {
        panic!("msgaudit_notify was refused")
    };
    assert_eq!(reply, "success");
    wait_for_records(service.store.as_ref(), MESSAGES as i64).await;
    let status = service.store.ingest_status(CORP).unwrap();
    assert_eq!(status.stored, MESSAGES as i64);
    assert_eq!(status.archive_error, None, "cleared by the pull that succeeded");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_keys_for_the_classic_archive_are_checked() {
    let fixture = ArchiveFixture::new(1, 0).await;
    let config = fixture.config(10, 1000);
    let missing = config.replace(
        &format!("library = {:?}", fixture.library.display().to_string()),
        "library = \"/nowhere/libWeWorkFinanceSdk_C.so\"",
    );
    let error = wecom_zone::config::Config::from_toml_str(&missing, Vec::new(), None).unwrap_err().to_string();
    assert!(error.starts_with("finance_sdk.library"), "{error}");
    let no_secret = config.replace(&format!("archive_secret = \"{ARCHIVE_SECRET}\""), "");
    let error = wecom_zone::config::Config::from_toml_str(&no_secret, Vec::new(), None).unwrap_err().to_string();
    assert!(error.starts_with("corp[0].archive_secret"), "{error}");
    assert!(!Path::new("/nowhere").exists());
}

/// Waits until no media entry of these messages is pending, or panics after 60 s.
pub async fn wait_for_media(store: &SqliteStore, msgids: &[String]) {
    use wecom_zone::domain::MediaStatus;
    use wecom_zone::store::MediaStore;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = msgids
            .iter()
            .filter(|msgid| {
                store.media_of(CORP, msgid).unwrap().is_none_or(|entry| entry.status == MediaStatus::Pending)
            })
            .count();
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} media files still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_downloaded_verified_deduplicated_and_served_in_ranges() {
    use base64::Engine;
    use wecom_zone::domain::MediaStatus;
    use wecom_zone::store::MediaStore;

    const MESSAGES: usize = 140;
    const MAX_FILE_BYTES: u64 = 1_000_000;
    let fixture = ArchiveFixture::new(MESSAGES, 1_500_000).await;
    let media = fixture.media_messages();
    assert!(media.len() >= 25, "the corpus has media of every kind: {}", media.len());
    let small: Vec<_> = media
        .iter()
        .filter(|(_, _, md5sum, size)| *size > 0 && *size <= MAX_FILE_BYTES && !md5sum.is_empty())
        .collect();
    let damaged = &small[0].1;
    fixture.simulator.corrupt_media(damaged, 1);

    let service = RunningService::start(&fixture.config_with_media_limit(100, 5000, MAX_FILE_BYTES)).await;
    wait_for_records(service.store.as_ref(), MESSAGES as i64).await;
    let msgids: Vec<String> = media.iter().map(|(msgid, ..)| msgid.clone()).collect();
    wait_for_media(&service.store, &msgids).await;

    let mut md5s = std::collections::BTreeSet::new();
    for (msgid, _, md5sum, size) in &media {
        let entry = service.store.media_of(CORP, msgid).unwrap().unwrap();
        if *size > MAX_FILE_BYTES {
            assert_eq!(entry.status, MediaStatus::TooLarge, "{msgid}");
        } else {
            assert_eq!(entry.status, MediaStatus::Stored, "{msgid}");
            let stored = entry.stored_md5.unwrap();
            if !md5sum.is_empty() {
                assert_eq!(&stored, md5sum, "{msgid}");
            }
            md5s.insert(stored);
        }
    }
    // One file per md5: forwarded copies share theirs.
    let mut files = 0;
    for dir in std::fs::read_dir(fixture.media_dir()).unwrap() {
        let dir = dir.unwrap();
        if dir.file_name() != "partial" {
            files += std::fs::read_dir(dir.path()).unwrap().count();
        }
    }
    assert_eq!(files, md5s.len());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fixture.media_dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "media is private to the service");
    }
    assert!(md5s.len() < small.len(), "some files were the same and stored once");
    // The damaged download was fetched again.
    let damaged_starts =
        fixture.simulator.media_requests().iter().filter(|(id, offset)| id == damaged && *offset == 0).count();
    assert_eq!(damaged_starts, 2, "an md5 mismatch is downloaded again");

    // get_media in ranges gives back exactly WeCom's bytes.
    let client = fixture.client(&service.url);
    let (msgid, sdkfileid, md5sum, size) =
        media.iter().find(|(.., size)| *size > 524_288 && *size <= MAX_FILE_BYTES).unwrap();
    let mut bytes = Vec::new();
    loop {
        let request = json!({"msgid": msgid, "offset": bytes.len(), "length": 300_000});
        let Answer::Sealed(answer) = client.call_ability("get_media", &request, "", None).await.unwrap() else {
            panic!("get_media was refused")
        };
        assert_eq!((answer["status"].as_str(), answer["md5sum"].as_str()), (Some("stored"), Some(md5sum.as_str())));
        assert_eq!(answer["size"], *size);
        bytes.extend(base64::engine::general_purpose::STANDARD.decode(answer["data"].as_str().unwrap()).unwrap());
        if answer["eof"] == true {
            break;
        }
    }
    assert_eq!(bytes, fixture.simulator.media(sdkfileid).unwrap());
    let Answer::Sealed(answer) =
        client.call_ability("get_media", &json!({"msgid": msgid, "length": 524_289}), "", None).await.unwrap()
    else {
        panic!("refused")
    };
    assert_ne!(answer["errcode"], 0, "a range over 512 KB is refused");
    service.stop().await;
}
