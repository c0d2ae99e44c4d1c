//! `wecom-zone bench abilities`: the reading abilities at scale. Stores N synthetic records
//! (group chats and one-to-one chats between internal users and external contacts, spread over
//! 30 days) through the real page commit, then calls each ability through `Abilities::call` with a
//! mix of filters and deep cursors, and prints p50/p95 per ability. The timed part is what a
//! request to the service spends in the ability: input parsing, the SQLite query, the output JSON.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::BenchError;
use crate::abilities::Abilities;
use crate::background::{Backoff, EntryRetry};
use crate::config::Config;
use crate::crypto::generate_key_pair_pem;
use crate::domain::{AbilityCall, Clock, DecryptStatus, unix_now};
use crate::mailbox::{Mailbox, MailboxPolicy};
use crate::metrics::Metrics;
use crate::simulator::SplitMix;
use crate::store::{NewRecord, PageCommit, RecordStore, SqliteStore, blocking};
use crate::upstream::UpstreamClient;

const CORP_ID: &str = "wwbench0000000002";
const USERS: usize = 2_000;
const EXTERNALS: usize = 20_000;
const GROUPS: usize = 5_000;
const PAGE: usize = 1_000;
/// Calls per ability shape.
const CALLS: usize = 200;

/// p50 and p95 of one ability, in milliseconds.
#[derive(Debug, Clone)]
pub struct AbilityFigure {
    pub ability: &'static str,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

pub async fn run(records: usize, out: &mut dyn Write) -> Result<Vec<AbilityFigure>, BenchError> {
    let setup = |error: &dyn std::fmt::Display| BenchError::Setup(error.to_string());
    let workdir = tempfile::tempdir().map_err(|e| setup(&e))?;
    let store = Arc::new(SqliteStore::open(&workdir.path().join("bench.sqlite")).map_err(|e| setup(&e))?);
    let _ = writeln!(out, "storing {records} synthetic records through the page commit (not timed per query)");
    let started = Instant::now();
    let newest = fill(Arc::clone(&store), records).await.map_err(|e| setup(&e))?;
    let elapsed = started.elapsed();
    let _ = writeln!(
        out,
        "stored {records} records in {:.1} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
    );
    let abilities = abilities(Arc::clone(&store), &workdir).map_err(|e| setup(&e))?;
    let mut rng = SplitMix::new(7);
    let max_id = i64::try_from(records).unwrap_or(i64::MAX);
    let mut figures = Vec::new();
    for (ability, make) in query_mix(newest) {
        let mut latencies = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let request = make(&mut rng, max_id);
            let call = AbilityCall {
                corp_id: CORP_ID.into(),
                agent_id: 0,
                ability_id: ability_id(ability).to_owned(),
                notify_id: "".into(),
                job_info: String::new(),
                is_async: false,
                request_data: request.to_string(),
            };
            let started = Instant::now();
            let output = abilities.call(&call).await;
            latencies.push(started.elapsed());
            if output["errcode"] != 0 {
                return Err(BenchError::Verify(format!("{ability} {request}: {output}")));
            }
        }
        let figure = percentiles(ability, &mut latencies);
        let _ = writeln!(out, "  {:<34} p50 {:>7.2} ms   p95 {:>7.2} ms", ability, figure.p50_ms, figure.p95_ms);
        figures.push(figure);
    }
    let worst = figures.iter().max_by(|a, b| a.p95_ms.total_cmp(&b.p95_ms)).cloned();
    if let Some(worst) = worst {
        let _ = writeln!(
            out,
            "abilities: {records} records, {} shapes x {CALLS} calls, worst p95 {:.2} ms ({})",
            figures.len(),
            worst.p95_ms,
            worst.ability
        );
    }
    Ok(figures)
}

fn ability_id(shape: &str) -> &str {
    shape.split_whitespace().next().unwrap_or(shape)
}

type RequestMaker = Box<dyn Fn(&mut SplitMix, i64) -> Value>;

/// Each shape of call: the ability id first, then what varies.
fn query_mix(newest: i64) -> Vec<(&'static str, RequestMaker)> {
    let cursor = |id: i64| URL_SAFE_NO_PAD.encode(format!("m:{id}"));
    vec![
        ("list_messages (first page)", Box::new(|_: &mut SplitMix, _| json!({"limit": 100}))),
        (
            "list_messages (deep cursor)",
            Box::new(
                move |rng: &mut SplitMix, max| json!({"limit": 100, "cursor": cursor(rng.below(max as usize) as i64)}),
            ),
        ),
        ("list_messages chatid", Box::new(|rng: &mut SplitMix, _| json!({"chatid": group(rng.below(GROUPS))}))),
        ("list_messages userid", Box::new(|rng: &mut SplitMix, _| json!({"userid": user(rng.below(USERS))}))),
        (
            "list_messages external_userid",
            Box::new(|rng: &mut SplitMix, _| json!({"external_userid": external(rng.below(EXTERNALS))})),
        ),
        ("list_messages msgtype", Box::new(|rng: &mut SplitMix, _| json!({"msgtype": 1 + rng.below(10)}))),
        (
            "list_messages time window",
            Box::new(move |rng: &mut SplitMix, _| {
                let end = newest - rng.below(29 * 86_400) as i64;
                json!({"begin_time": end - 3_600, "end_time": end})
            }),
        ),
        ("get_message", Box::new(|rng: &mut SplitMix, max| json!({"msgid": msgid(rng.below(max as usize))}))),
        ("list_conversations", Box::new(|_: &mut SplitMix, _| json!({"limit": 100}))),
        ("list_conversations userid", Box::new(|rng: &mut SplitMix, _| json!({"userid": user(rng.below(USERS))}))),
        ("ingest_status", Box::new(|_: &mut SplitMix, _| json!({}))),
    ]
}

fn percentiles(ability: &'static str, latencies: &mut [Duration]) -> AbilityFigure {
    latencies.sort_unstable();
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        latencies[index.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    AbilityFigure { ability, p50_ms: at(0.50), p95_ms: at(0.95) }
}

fn user(n: usize) -> String {
    format!("user{n:05}")
}
fn external(n: usize) -> String {
    format!("wmext{n:06}")
}
fn group(n: usize) -> String {
    format!("wrgroup{n:05}")
}
fn msgid(n: usize) -> String {
    format!("benchmsg{n:09}")
}

/// Commits `records` synthetic records in pages; returns the newest send_time.
async fn fill(store: Arc<SqliteStore>, records: usize) -> Result<i64, crate::store::StoreError> {
    let start = unix_now() - 30 * 86_400;
    let step = (30 * 86_400) as f64 / records.max(1) as f64;
    let mut rng = SplitMix::new(2024);
    let mut index = 0usize;
    while index < records {
        let count = PAGE.min(records - index);
        let page: Vec<NewRecord> =
            (index..index + count).map(|n| synthetic(&mut rng, n, start + (n as f64 * step) as i64)).collect();
        let commit = PageCommit {
            corp_id: CORP_ID.into(),
            cursor_in: None,
            cursor_out: format!("c{}", index + count),
            records: page,
        };
        let store = Arc::clone(&store);
        blocking(move || store.commit_page(&commit)).await?;
        index += count;
    }
    Ok(start + (records as f64 * step) as i64)
}

fn synthetic(rng: &mut SplitMix, n: usize, send_time: i64) -> NewRecord {
    let sender = user(rng.below(USERS));
    let (chatid, receivers, conversation) = if rng.below(10) < 4 {
        let chat = group(rng.below(GROUPS));
        let members: Vec<Value> = (0..5)
            .map(|k| {
                if k % 2 == 0 {
                    json!({"type": 1, "id": user(rng.below(USERS))})
                } else {
                    json!({"type": 2, "id": external(rng.below(EXTERNALS))})
                }
            })
            .collect();
        (Some(chat.clone()), Value::Array(members), chat)
    } else {
        let other = external(rng.below(EXTERNALS));
        let mut pair = [sender.clone(), other.clone()];
        pair.sort();
        (None, json!([{"type": 2, "id": other}]), pair.join("|"))
    };
    let msgid = msgid(n);
    NewRecord {
        raw: json!({"msgid": msgid, "send_time": send_time, "service_encrypt_info": {"encrypted_secret_key": "x".repeat(344), "public_key_ver": 1}}).to_string(),
        msgid: msgid.into(),
        sender_type: 1,
        sender_id: sender,
        receivers: receivers.to_string(),
        chatid,
        conversation,
        send_time,
        msgtype: 1 + rng.below(10) as i64,
        public_key_ver: Some(1),
        encrypted_secret_key: Some("x".repeat(344)),
        secret_key: Some("0123456789abcdef0123456789abcdef".into()),
        decrypt_status: DecryptStatus::Ok,
        call_duration: None,
        archive: None,
    }
}

/// The abilities as the service builds them (the upstream is never called by these abilities).
fn abilities(store: Arc<SqliteStore>, workdir: &tempfile::TempDir) -> Result<Abilities, String> {
    let (private_pem, _) = generate_key_pair_pem().map_err(|e| e.to_string())?;
    let key_path = workdir.path().join("key.pem");
    std::fs::write(&key_path, private_pem).map_err(|e| e.to_string())?;
    let (secret, token) = (rand::random::<u128>(), rand::random::<u32>());
    let aes_key = "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ";
    let key_path = key_path.display().to_string();
    let text = format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n[[corp]]\ncorp_id = \"{CORP_ID}\"\nsecret = \"s{secret:032x}\"\n\
         token = \"Bench{token}\"\nencoding_aes_key = \"{aes_key}\"\nprivate_keys = [ {{ version = 1, path = {key_path:?} }} ]\n"
    );
    let config = Config::from_toml_str(&text, Vec::new(), None).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics)).map_err(|e| e.to_string())?;
    let retry =
        EntryRetry { backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(1) }, max_attempts: 1 };
    let policy = MailboxPolicy { ttl: Duration::from_secs(60), max_answer_bytes: 1 << 20, retry };
    let mailbox = Arc::new(Mailbox::new(Arc::clone(&store) as _, upstream.clone(), policy, Clock::system(), metrics));
    Ok(Abilities::new(store as Arc<dyn RecordStore>, upstream, mailbox, Vec::new()))
}
