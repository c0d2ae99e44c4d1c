//! Ingest end to end: the real service (HTTP on port 0, pull loops, RSA pool, SQLite) against the
//! WeCom simulator on loopback.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wecom_zone::client::Answer;
use wecom_zone::config::Config;
use wecom_zone::crypto::EnvelopeFormat;
use wecom_zone::crypto::generate_key_pair_pem;
use wecom_zone::domain::{Clock, DecryptStatus};
use wecom_zone::simulator::{Simulator, SimulatorConfig};
use wecom_zone::store::{RecordStore, SqliteStore};

pub const CORP: &str = "wwingest000000001";

/// `(version, private PEM, public PEM)` of the two generated vector keys.
pub fn vector_keys() -> Vec<(u32, String, String)> {
    let vectors: Value = serde_json::from_str(include_str!("../data/chatmsg.json")).unwrap();
    vectors["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["publickey_ver"].as_u64().unwrap() as u32,
                key["private_key_pem_pkcs8"].as_str().unwrap().to_owned(),
                key["public_key_pem_spki"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn simulator_config(messages: usize, public_keys: Vec<(u32, String)>) -> SimulatorConfig {
    SimulatorConfig::new(CORP, messages, public_keys)
}

/// The service's config for `simulator`, with the given private keys and database.
pub fn service_config(simulator: &Simulator, private_keys: &[(u32, String)], db: &Path, page_limit: u32) -> String {
    service_config_with(simulator, private_keys, db, page_limit, "")
}

/// As `service_config`, with `extra` TOML sections appended.
pub fn service_config_with(
    simulator: &Simulator,
    private_keys: &[(u32, String)],
    db: &Path,
    page_limit: u32,
    extra: &str,
) -> String {
    let keys: Vec<String> = private_keys
        .iter()
        .map(|(version, pem)| format!("{{ version = {version}, pem = \"\"\"{pem}\"\"\" }}"))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = {db:?}
[upstream]
base_url = "{base_url}"
timeout_ms = 3000
retry_base_ms = 5
retry_max_ms = 50
max_retries = 12
[ingest]
page_limit = {page_limit}
poll_interval_s = 0
[log]
level = "warn"
{corp}
{extra}
"#,
        db = db.display().to_string(),
        base_url = simulator.base_url(),
        corp = simulator.corp_toml(&keys),
    )
}

pub struct RunningService {
    pub url: String,
    pub store: Arc<SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningService {
    pub async fn start(config_text: &str) -> RunningService {
        Self::start_with_clock(config_text, Clock::system()).await
    }

    pub async fn start_with_clock(config_text: &str, clock: Clock) -> RunningService {
        let config = Config::from_toml_str(config_text, Vec::new(), None).unwrap();
        let service = wecom_zone::app::start_with_clock(config, clock).unwrap();
        let store = Arc::clone(&service.store);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        RunningService { url, store, stop: Some(stop), task }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    pub fn stored(&self) -> i64 {
        self.store.ingest_status(CORP).unwrap().stored
    }

    /// Waits until `count` records are stored (and nothing is in flight), or panics after 60 s.
    pub async fn wait_for(&self, count: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.stored() < count {
            assert!(Instant::now() < deadline, "only {} of {count} records stored", self.stored());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every message of the simulator is stored once, with the secret key the simulator encrypted.
pub fn assert_every_record_stored_once(store: &dyn RecordStore, simulator: &Simulator, known_versions: &[u32]) {
    let corpus_len = simulator.corpus().len();
    let status = store.ingest_status(CORP).unwrap();
    assert_eq!(status.stored, corpus_len as i64, "stored exactly the corpus, no more, no less");
    for index in 0..corpus_len {
        let expected = simulator.expected(index);
        let stored = store.record(CORP, &expected.msgid).unwrap().unwrap_or_else(|| panic!("message {index} missing"));
        assert_eq!(stored.record.public_key_ver, Some(expected.key_version));
        assert_eq!(stored.record.send_time, expected.send_time);
        assert_eq!(stored.record.chatid, expected.chatid);
        if known_versions.contains(&expected.key_version) {
            assert_eq!(stored.record.decrypt_status, DecryptStatus::Ok, "message {index}");
            assert_eq!(stored.record.secret_key.as_deref(), Some(expected.secret_key.as_str()), "message {index}");
        } else {
            assert_eq!(stored.record.decrypt_status, DecryptStatus::UnknownKeyVersion, "message {index}");
            assert_eq!(stored.record.secret_key, None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_message_event_leads_to_every_record_stored_once_with_its_secret_key() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(1500, publics)).await.unwrap();
    simulator.publish(0); // the start-up pull finds nothing; the event brings the messages
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service =
        RunningService::start(&service_config(&simulator, &privates, &dir.path().join("db.sqlite"), 200)).await;

    simulator.publish(1500);
    let (event, event_token) = simulator.new_message_event();
    let answer = simulator.client_for(&service.url).unwrap().send(&event, EnvelopeFormat::Json).await.unwrap();
    assert_eq!(answer, Answer::Sealed(serde_json::json!({"errcode": 0, "errmsg": "ok"})));

    service.wait_for(1500).await;
    // The pull that follows the event passes its token (a start-up pull may have stored the
    // messages first; the follow-up pull still runs, with the token).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !simulator.sync_tokens().contains(&event_token) {
        assert!(Instant::now() < deadline, "the event's token was never passed to sync_msg");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2]);
    let metrics = reqwest::get(format!("{}/metrics", service.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("wecom_zone_records_stored_total{{corp_id=\"{CORP}\"}} 1500")), "{metrics}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_version_is_stored_counted_and_decrypted_once_its_key_appears() {
    let keys = vector_keys();
    let (private_v3, public_v3) = generate_key_pair_pem().unwrap();
    let mut publics: Vec<(u32, String)> = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    publics.push((3, public_v3));
    let simulator = Simulator::start(simulator_config(900, publics)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let mut privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();

    // Start-up pulls everything; the last third is encrypted for version 3, unknown so far.
    let service = RunningService::start(&service_config(&simulator, &privates, &db, 1000)).await;
    service.wait_for(900).await;
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2]);
    let status = service.store.ingest_status(CORP).unwrap();
    assert_eq!(status.failed, vec![(DecryptStatus::UnknownKeyVersion, 300)]);
    let metrics = reqwest::get(format!("{}/metrics", service.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reason=\"unknown_key_version\",key_version=\"3\"} 300"), "{metrics}");
    service.stop().await;

    // Restart with the version 3 key configured: the 300 records are decrypted at start-up.
    privates.push((3, private_v3));
    let service = RunningService::start(&service_config(&simulator, &privates, &db, 1000)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !service.store.ingest_status(CORP).unwrap().failed.is_empty() {
        assert!(Instant::now() < deadline, "keys were not recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2, 3]);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_upstream_faults_lose_and_duplicate_nothing() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let mut config = simulator_config(2000, publics);
    config.fault_rate = 0.3;
    config.max_fault_delay = Duration::from_millis(30);
    let simulator = Simulator::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service =
        RunningService::start(&service_config(&simulator, &privates, &dir.path().join("db.sqlite"), 50)).await;

    service.wait_for(2000).await;
    assert!(simulator.stats().faults_injected.load(Ordering::SeqCst) >= 10, "faults were injected");
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2]);
    let metrics = reqwest::get(format!("{}/metrics", service.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wecom_zone_upstream_retries_total{cause="), "{metrics}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_pull_costs_one_refresh() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(1000, publics)).await.unwrap();
    simulator.publish(0);
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service =
        RunningService::start(&service_config(&simulator, &privates, &dir.path().join("db.sqlite"), 50)).await;
    // The start-up pull (nothing to fetch) has fetched the first token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while simulator.stats().sync_msg_calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(simulator.stats().gettoken_calls.load(Ordering::SeqCst), 1);

    simulator.publish(1000);
    simulator.expire_tokens_after(6); // the token dies after six more pages
    let (event, _) = simulator.new_message_event();
    let answer = simulator.client_for(&service.url).unwrap().send(&event, EnvelopeFormat::Xml).await.unwrap();
    assert!(matches!(answer, Answer::Sealed(_)), "{answer:?}");
    service.wait_for(1000).await;
    assert_eq!(simulator.stats().gettoken_calls.load(Ordering::SeqCst), 2, "exactly one refresh");
    assert_eq!(simulator.stats().rejected_tokens.load(Ordering::SeqCst), 1, "one rejected call");
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2]);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_pulled_again_changes_nothing() {
    // The store side of exactly-once: the same pages committed twice leave one copy.
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(300, publics)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service = RunningService::start(&service_config(&simulator, &privates, &db, 100)).await;
    service.wait_for(300).await;
    service.stop().await;
    // Forget the cursor, as if the commit of the cursor had been lost: everything is pulled again.
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection.execute("DELETE FROM cursors", []).unwrap();
    }
    let served_before = simulator.stats().items_served.load(Ordering::SeqCst);
    let service = RunningService::start(&service_config(&simulator, &privates, &db, 100)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while simulator.stats().items_served.load(Ordering::SeqCst) < served_before + 300 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_every_record_stored_once(service.store.as_ref(), &simulator, &[1, 2]);
    let reopened = SqliteStore::open(&db).unwrap();
    assert_eq!(reopened.ingest_status(CORP).unwrap().stored, 300);
    service.stop().await;
}

/// A WeCom that misbehaves: a token announced to live forever, a message sent at i64::MIN, and
/// `has_more` with a cursor that never moves. The pull stops with an error instead of looping,
/// nothing panics (tests run with overflow checks), and the puller keeps working afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrustworthy_answers_neither_panic_nor_loop() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(10, publics)).await.unwrap();
    simulator.announce_expires_in(u64::MAX);
    let stuck = br#"{"errcode":0,"errmsg":"ok","has_more":1,"next_cursor":"c1",
        "msg_list":[{"msgid":"from-the-year-minus-infinity","send_time":-9223372036854775808,"msgtype":1}]}"#;
    simulator.script("sync_msg", vec![(200, stuck.to_vec()); 4]);
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service =
        RunningService::start(&service_config(&simulator, &privates, &dir.path().join("db.sqlite"), 100)).await;
    service.wait_for(1).await;
    let sync_calls = || simulator.calls().iter().filter(|call| call.api == "sync_msg").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sync_calls() < 4 {
        assert!(Instant::now() < deadline, "the puller stopped after {} calls", sync_calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", service.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wecom_zone_pull_failures_total"), "the stuck cursor is a failure: {metrics}");
    let status = service.store.ingest_status(CORP).unwrap();
    assert_eq!((status.stored, status.newest_send_time), (1, Some(i64::MIN)));
    let client = simulator.client_for(&service.url).unwrap();
    let answer = client.call_ability("ingest_status", &serde_json::json!({}), "", None).await.unwrap();
    assert!(matches!(answer, wecom_zone::client::Answer::Sealed(ref output) if output["errcode"] == 0), "{answer:?}");
    service.stop().await;
}
