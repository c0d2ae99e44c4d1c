//! `wecom-zone demo`: the whole product on one machine, the first thing a new user runs.
//!
//! A WeCom simulator and the service start on loopback with a fresh data folder; the simulator
//! announces new messages, the service pulls, decrypts and stores them, notifies the application
//! through `spec_notify_app`, and the demo then plays the application: it fetches the notification
//! with `get_callback_data`, lists messages and conversations, and runs an async call. Then the
//! classic archive: a second corp on `archive = "finance_sdk"`, pulled through the stand-in
//! finance SDK in a supervised worker process, with one record that crashes the SDK, content
//! listed and a media file fetched in ranges.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::app;
use crate::client::{Answer, ZoneClient};
use crate::config::Config;
use crate::crypto::EnvelopeFormat;
use crate::domain::ContentStatus;
use crate::keys::write_key_pair;
use crate::simulator::archive::ArchiveSimulator;
use crate::simulator::stub_sdk;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::store::{RecordStore, blocking};

const CORP_ID: &str = "wwdemo00000000001";
/// The demo's corp on the classic archive.
const CLASSIC_CORP_ID: &str = "wwdemoclassic0001";
/// Classic records in the demo's archive; record `CLASSIC_CRASHER` crashes the SDK.
const CLASSIC_MESSAGES: usize = 120;
const CLASSIC_CRASHER: u64 = 5;
/// How long each step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error("{step}: {message}")]
    Step { step: &'static str, message: String },
}

fn step_error(step: &'static str, message: impl std::fmt::Display) -> DemoError {
    DemoError::Step { step, message: message.to_string() }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    pub stored: i64,
    pub decrypt_failures: i64,
    pub notify_ids_issued: usize,
    pub notify_ids_fetched: usize,
    pub async_results_delivered: usize,
    /// Classic archive records stored, and how many of them with content.
    pub classic_stored: i64,
    pub classic_content_ok: i64,
    /// Media bytes fetched with `get_media` and checked against WeCom's md5.
    pub media_bytes_fetched: usize,
    pub data_dir: PathBuf,
}

/// The classic corp's side of the demo: its simulator, its callback credentials.
struct Classic {
    simulator: ArchiveSimulator,
    secret: String,
    token: String,
    aes_key: String,
    library: PathBuf,
}

pub struct DemoOptions {
    pub messages: usize,
    /// Stop after the walkthrough instead of serving until Ctrl-C.
    pub exit: bool,
    /// Where to listen; `127.0.0.1:8080` by default, a free port if that is taken.
    pub listen: Option<String>,
}

pub async fn run(options: DemoOptions, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let data_dir = fresh_data_dir().map_err(|e| DemoError::Setup(e.to_string()))?;
    say(out, &format!("wecom-zone demo: {} synthetic messages, data folder {}", options.messages, data_dir.display()));

    say(out, "1/7 generating RSA-2048 keys v1 and v2 (WeCom rotates message keys; records keep their version)");
    let keys_dir = data_dir.join("keys");
    let mut publics = Vec::new();
    for version in [1, 2] {
        let (_, public) = write_key_pair(&keys_dir, version).map_err(|e| DemoError::Setup(e.to_string()))?;
        publics.push((version, std::fs::read_to_string(public).map_err(|e| DemoError::Setup(e.to_string()))?));
    }

    say(out, "2/7 starting the WeCom simulator and encrypting every message's secret key");
    let classic = classic_archive(&data_dir, &publics).await?;
    let mut sim_config = SimulatorConfig::new(CORP_ID, options.messages, publics);
    sim_config.page_delay = Duration::from_millis(5);
    let simulator = Simulator::start(sim_config).await.map_err(|e| DemoError::Setup(e.to_string()))?;
    simulator.publish(0); // the messages "arrive" with the event below

    say(out, "3/7 starting the service with an embedded SQLite store");
    let listener = bind(options.listen.as_deref()).await?;
    let address = listener.local_addr().map_err(|e| DemoError::Setup(e.to_string()))?;
    let config_path = write_config(&data_dir, &simulator, &classic, &address.to_string())?;
    let config = Config::load(Some(&config_path)).map_err(|e| DemoError::Setup(e.to_string()))?;
    let service = app::start(config).map_err(|e| DemoError::Setup(e.to_string()))?;
    let store = std::sync::Arc::clone(&service.store);
    let classic_store = std::sync::Arc::clone(&service.store);
    let ingest_status = move || {
        let store = std::sync::Arc::clone(&store);
        async move { blocking(move || store.ingest_status(CORP_ID)).await.map_err(|e| step_error("ingest", e)) }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let server = tokio::spawn(service.serve(listener, shutdown));
    let url = format!("http://{address}/");
    say(out, &format!("    listening on {url}"));
    let client = simulator.client_for(&url).map_err(|e| DemoError::Setup(e.to_string()))?;

    say(out, "4/7 WeCom announces new messages (conversation_new_message); the service pulls, decrypts, stores");
    simulator.publish(options.messages);
    let (event, _) = simulator.new_message_event();
    match client.send(&event, EnvelopeFormat::Json).await.map_err(|e| step_error("event", e))? {
        Answer::Sealed(answer) if answer["errcode"] == 0 => {}
        other => return Err(step_error("event", format!("unexpected answer {other:?}"))),
    }
    let bar = progress_bar(options.messages as u64);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let status = ingest_status().await?;
        bar.set_position(status.stored.max(0) as u64);
        if status.stored >= options.messages as i64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(step_error("ingest", format!("only {} records stored", status.stored)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish();
    let status = ingest_status().await?;
    let decrypt_failures: i64 = status.failed.iter().map(|(_, count)| count).sum();
    say(
        out,
        &format!(
            "    stored {} records in {} pages, {decrypt_failures} without a secret key",
            status.stored, status.pages
        ),
    );

    say(out, "5/7 the service notifies the application (spec_notify_app); the application fetches it");
    let notify_id = wait_for_notify_id(&simulator, 1).await?;
    say(out, &format!("    notify_id {notify_id} issued for scene 1 (conversation_new_message)"));
    let fetched =
        expect_ok(client.call_ability("get_callback_data", &json!({}), &notify_id, None).await, "get_callback_data")?;
    say(out, &format!("    get_callback_data → {}", fetched["pull_summary"]));
    let mut notify_ids_fetched = 1;

    let listed =
        expect_ok(client.call_ability("list_messages", &json!({"limit": 3}), "", None).await, "list_messages")?;
    for message in listed["msg_list"].as_array().into_iter().flatten() {
        say(
            out,
            &format!(
                "    message {} msgtype {} from {} key v{} {} (secret key {} chars, not shown)",
                message["msgid"].as_str().unwrap_or_default(),
                message["msgtype"],
                message["sender"]["id"].as_str().unwrap_or_default(),
                message["public_key_ver"],
                message["decrypt_status"].as_str().unwrap_or_default(),
                message["secret_key"].as_str().map_or(0, str::len),
            ),
        );
    }
    let conversations = expect_ok(
        client.call_ability("list_conversations", &json!({"limit": 3}), "", None).await,
        "list_conversations",
    )?;
    for conversation in conversations["conversation_list"].as_array().into_iter().flatten() {
        say(
            out,
            &format!(
                "    conversation of {} participants, message count {}",
                conversation["participants"].as_array().map_or(0, Vec::len),
                conversation["message_count"]
            ),
        );
    }

    say(out, "6/7 an asynchronous call: acknowledged at once, its result sent to program_async_job_call_back");
    let job_info = "demo-job-1";
    expect_ok(client.call_ability("ingest_status", &json!({}), "", Some(job_info)).await, "async ingest_status")?;
    let delivered = wait_for_async_result(&simulator, job_info).await?;
    say(
        out,
        &format!("    program_async_job_call_back received job_info {job_info}: errcode {}", delivered["errcode"]),
    );
    let result_notify = wait_for_notify_id(&simulator, 50).await?;
    let kept = expect_ok(
        client.call_ability("get_callback_data", &json!({}), &result_notify, None).await,
        "get_callback_data",
    )?;
    notify_ids_fetched += 1;
    say(
        out,
        &format!(
            "    the result is also in the mailbox: notify_id {result_notify}, ability {}",
            kept["async_result"]["ability_id"]
        ),
    );

    say(out, "7/7 the classic archive (会话内容存档): the finance SDK (a stand-in with its C ABI) in a worker process");
    let classic_client = ZoneClient::new(&url, CLASSIC_CORP_ID, &classic.token, &classic.aes_key)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let (classic_stored, classic_content_ok, media_bytes_fetched) =
        classic_walkthrough(&classic, &classic_client, classic_store, out).await?;

    let notify_ids_issued = simulator.calls().iter().filter(|call| call.api == "spec_notify_app").count();
    let report = DemoReport {
        stored: status.stored,
        decrypt_failures,
        notify_ids_issued,
        notify_ids_fetched,
        async_results_delivered: 1,
        classic_stored,
        classic_content_ok,
        media_bytes_fetched,
        data_dir: data_dir.clone(),
    };
    say(out, "");
    say(out, "summary");
    say(out, &format!("  records stored:         {}", report.stored));
    say(out, &format!("  decrypt failures:       {}", report.decrypt_failures));
    say(out, &format!("  notify ids issued:      {}", report.notify_ids_issued));
    say(out, &format!("  notify ids fetched:     {}", report.notify_ids_fetched));
    say(out, &format!("  async results:          {} delivered", report.async_results_delivered));
    say(
        out,
        &format!(
            "  classic records:        {} ({} with content, 1 parked after crashing the SDK)",
            report.classic_stored, report.classic_content_ok
        ),
    );
    say(out, &format!("  media fetched:          {} bytes, md5 verified", report.media_bytes_fetched));
    say(out, &format!("  time taken:             {:.1} s", started.elapsed().as_secs_f64()));
    say(out, &format!("  data folder:            {}", data_dir.display()));

    if !options.exit {
        say(out, "");
        say(out, &format!("still serving on {url}; call it as the application would, for example:"));
        say(
            out,
            &format!(
                "  wecom-zone call --config {} --ability list_messages --data '{{\"limit\":2}}'",
                config_path.display()
            ),
        );
        say(out, "press Ctrl-C to stop");
        crate::background::termination_signal().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(report)
}

fn say(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("    [{bar:40}] {pos}/{len} records ({per_sec}, {elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn fresh_data_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("wecom-zone-demo-{}-{attempt}", crate::domain::unix_now()));
        if std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    Err(std::io::Error::other("no fresh data folder could be created"))
}

async fn bind(listen: Option<&str>) -> Result<TcpListener, DemoError> {
    let wanted = listen.unwrap_or("127.0.0.1:8080");
    match TcpListener::bind(wanted).await {
        Ok(listener) => Ok(listener),
        Err(_) if listen.is_none() => {
            TcpListener::bind("127.0.0.1:0").await.map_err(|e| DemoError::Setup(e.to_string()))
        }
        Err(error) => Err(DemoError::Setup(format!("cannot listen on {wanted}: {error}"))),
    }
}

fn write_config(dir: &Path, simulator: &Simulator, classic: &Classic, listen: &str) -> Result<PathBuf, DemoError> {
    let path = dir.join("wecom-zone.toml");
    let private_keys: Vec<String> = [1, 2]
        .iter()
        .map(|version| {
            let key = dir.join(format!("keys/private_key_v{version}.pem"));
            format!("{{ version = {version}, path = {:?} }}", key.display().to_string())
        })
        .collect();
    let text = format!(
        r#"# Written by `wecom-zone demo`: the service against the simulator on loopback.
[server]
listen = "{listen}"
[storage]
path = {db:?}
[upstream]
base_url = "{base_url}"
retry_base_ms = 50
retry_max_ms = 1000
[ingest]
page_limit = 100
[log]
level = "warn"
[finance_sdk]
library = {library:?}
proxy = "{proxy}"
timeout_s = 5
call_deadline_ms = 10000
[media]
path = {media:?}
[search]
path = {search:?}
{corp}
[[corp]]
corp_id = "{CLASSIC_CORP_ID}"
archive = "finance_sdk"
archive_secret = "{archive_secret}"
token = "{token}"
encoding_aes_key = "{aes_key}"
private_keys = [ {private_keys} ]
"#,
        db = dir.join("wecom-zone.sqlite").display().to_string(),
        base_url = simulator.base_url(),
        corp = simulator.corp_toml(&private_keys),
        library = classic.library.display().to_string(),
        proxy = classic.simulator.proxy(),
        media = dir.join("media").display().to_string(),
        search = dir.join("search").display().to_string(),
        archive_secret = classic.secret,
        token = classic.token,
        aes_key = classic.aes_key,
        private_keys = private_keys.join(", "),
    );
    std::fs::write(&path, text).map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(path)
}

/// The classic corp's archive: records of every msgtype with media, one that crashes the SDK.
async fn classic_archive(data_dir: &Path, publics: &[(u32, String)]) -> Result<Classic, DemoError> {
    let secret = crate::simulator::random_alphanumeric(32);
    let simulator = ArchiveSimulator::start(CLASSIC_CORP_ID, &secret, CLASSIC_MESSAGES, publics, 700_000, 3)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    simulator.set_encrypt_chat_msg(CLASSIC_CRASHER, "!SEGV".into());
    let library = stub_sdk::install(data_dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(Classic {
        simulator,
        secret,
        token: crate::simulator::random_alphanumeric(24),
        aes_key: crate::simulator::random_alphanumeric(43),
        library,
    })
}

/// Waits for the classic corp's records (pulled at start-up), shows content, the parked
/// crasher, and fetches a media file in ranges. Returns (stored, content ok, media bytes).
async fn classic_walkthrough(
    classic: &Classic,
    client: &ZoneClient,
    store: std::sync::Arc<crate::store::SqliteStore>,
    out: &mut dyn Write,
) -> Result<(i64, i64, usize), DemoError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        let store = std::sync::Arc::clone(&store);
        let status =
            blocking(move || store.ingest_status(CLASSIC_CORP_ID)).await.map_err(|e| step_error("classic", e))?;
        if status.stored >= CLASSIC_MESSAGES as i64 {
            break status;
        }
        if Instant::now() > deadline {
            return Err(step_error("classic", format!("only {} records stored", status.stored)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let content_ok = status.content.iter().find(|(status, _)| *status == ContentStatus::Ok).map_or(0, |(_, n)| *n);
    say(
        out,
        &format!(
            "    pulled {} records by seq (GetChatData → RSA → DecryptData in the worker → validated)",
            status.stored
        ),
    );
    let listed = expect_ok(
        client.call_ability("list_messages", &json!({"msgtype": "text", "limit": 2}), "", None).await,
        "classic list_messages",
    )?;
    for message in listed["msg_list"].as_array().into_iter().flatten() {
        say(
            out,
            &format!(
                "    seq {} {} from {}: {}",
                message["seq"],
                message["msgtype"].as_str().unwrap_or_default(),
                message["from"].as_str().unwrap_or_default(),
                message["content"]["text"]["content"].as_str().unwrap_or_default()
            ),
        );
    }
    let crasher = classic.simulator.record(CLASSIC_CRASHER).ok_or_else(|| step_error("classic", "no crasher"))?;
    let parked =
        expect_ok(client.call_ability("get_message", &json!({"msgid": crasher.msgid}), "", None).await, "get_message")?;
    say(
        out,
        &format!(
            "    seq {CLASSIC_CRASHER} crashed the SDK (SIGSEGV) twice: two workers replaced, the record kept as content_status {}, the records after it stored",
            parked["message"]["content_status"]
        ),
    );
    let found = expect_ok(
        client.call_ability("search_messages", &json!({"query": "发票", "limit": 3}), "", None).await,
        "search_messages",
    )?;
    let hits = found["hits"].as_array().map_or(0, Vec::len);
    say(
        out,
        &format!(
            "    search_messages \"发票\" (exact substring, Chinese n-grams in a Tantivy index beside the store): {hits} newest hits{}",
            if found["has_more"] == true { ", more by cursor" } else { "" }
        ),
    );
    for hit in found["hits"].as_array().into_iter().flatten() {
        say(
            out,
            &format!(
                "      {} from {}: {}",
                hit["msgtype"].as_str().unwrap_or_default(),
                hit["from"].as_str().unwrap_or_default(),
                hit["snippet"].as_str().unwrap_or_default()
            ),
        );
    }
    let media_bytes = fetch_first_media(classic, client, out).await?;
    Ok((status.stored, content_ok, media_bytes))
}

/// Fetches the first media file in 512 KB ranges with `get_media` once it is stored.
async fn fetch_first_media(classic: &Classic, client: &ZoneClient, out: &mut dyn Write) -> Result<usize, DemoError> {
    use base64::Engine;
    let (msgid, sdkfileid) = (1..=CLASSIC_MESSAGES as u64)
        .filter_map(|seq| classic.simulator.record(seq))
        .find_map(|record| {
            let message: Value = serde_json::from_str(&record.plaintext).ok()?;
            let media = crate::finance::content::media_refs(message["msgtype"].as_str()?, &message);
            Some((record.msgid, media.into_iter().next()?.sdkfileid))
        })
        .ok_or_else(|| step_error("media", "the archive has no media"))?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut bytes = Vec::new();
    let mut ranges = 0;
    loop {
        let request = json!({"msgid": msgid, "offset": bytes.len()});
        let answer = expect_ok(client.call_ability("get_media", &request, "", None).await, "get_media")?;
        match answer["status"].as_str() {
            Some("stored") => {}
            Some("pending") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            other => return Err(step_error("media", format!("status {other:?}"))),
        }
        let chunk = base64::engine::general_purpose::STANDARD
            .decode(answer["data"].as_str().unwrap_or_default())
            .map_err(|e| step_error("media", e))?;
        bytes.extend(chunk);
        ranges += 1;
        if answer["eof"] == true {
            let expected = classic.simulator.media(&sdkfileid).unwrap_or_default();
            if bytes != expected {
                return Err(step_error("media", "the fetched file differs from WeCom's"));
            }
            say(
                out,
                &format!(
                    "    media: downloaded in the background (GetMediaData, 512 KB chunks, resumable), md5 {} verified; get_media returned {} bytes in {ranges} ranges",
                    answer["md5sum"].as_str().unwrap_or_default(),
                    bytes.len()
                ),
            );
            return Ok(bytes.len());
        }
    }
}

fn expect_ok(answer: Result<Answer, crate::client::ClientError>, step: &'static str) -> Result<Value, DemoError> {
    match answer.map_err(|e| step_error(step, e))? {
        Answer::Sealed(output) if output["errcode"] == 0 => Ok(output),
        other => Err(step_error(step, format!("unexpected answer {other:?}"))),
    }
}

async fn wait_for_notify_id(simulator: &Simulator, scene: i64) -> Result<String, DemoError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let found = simulator
            .calls()
            .into_iter()
            .rev()
            .find(|call| call.api == "spec_notify_app" && call.body["notify_scene"].as_i64() == Some(scene));
        if let Some(call) = found {
            return Ok(call.body["notify_id"].as_str().unwrap_or_default().to_owned());
        }
        if Instant::now() > deadline {
            return Err(step_error("notify", format!("no spec_notify_app call for scene {scene}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_async_result(simulator: &Simulator, job_info: &str) -> Result<Value, DemoError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let found = simulator
            .calls()
            .into_iter()
            .find(|call| call.api == "program_async_job_call_back" && call.body["job_info"] == job_info);
        if let Some(call) = found {
            return Ok(call.body);
        }
        if Instant::now() > deadline {
            return Err(step_error("async", "no program_async_job_call_back call"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
