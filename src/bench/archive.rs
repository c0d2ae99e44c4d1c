//! `wecom-zone bench ingest --archive finance_sdk`: the classic archive's pull, timed against
//! the machine's RSA-2048 bound measured in the same run.
//!
//! Not timed: `openssl speed -multi <cores> rsa2048` before and after the run (the bound, their
//! mean: one RSA private operation per record is the floor of the work), a key pair, the archive simulator's corpus (a file), the
//! stand-in SDK on disk. Timed: the real pipeline: GetChatData pages through the finance worker
//! (the stand-in SDK over loopback), one RSA-2048 decryption per record on the pool, DecryptData
//! through the worker's pipes, validation, committed SQLite transactions (records, content, page,
//! seq), and the search indexer beside it until every message is searchable. Afterwards every
//! record is counted and a sample's content compared with the simulator's plaintext.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BenchError, IngestReport, peak_rss_kib, process_peak_rss_kib};
use crate::app::build_ingestor;
use crate::background::{self, Backoff, Pace};
use crate::config::Config;
use crate::crypto::generate_key_pair_pem;
use crate::domain::ContentStatus;
use crate::metrics::Metrics;
use crate::search::{Indexer, Search};
use crate::simulator::archive::ArchiveSimulator;
use crate::simulator::stub_sdk;
use crate::store::{RecordStore, blocking};
use crate::upstream::UpstreamClient;

const CORP_ID: &str = "wwbenchfinance001";
const SECRET: &str = "benchArchiveSecret0123456789";
const SAMPLE: usize = 200;

pub async fn ingest(messages: usize, page_limit: u32, out: &mut dyn Write) -> Result<IngestReport, BenchError> {
    let setup = |error: &dyn std::fmt::Display| BenchError::Setup(error.to_string());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let _ = writeln!(out, "measuring the RSA-2048 bound: openssl speed -multi {cores} rsa2048 (not timed)");
    let bound_before = openssl_rsa_sign_per_s(cores);
    match bound_before {
        Some(rate) => {
            let _ = writeln!(out, "RSA bound before the run: {rate:.0} private operations/s on {cores} cores");
        }
        None => {
            let _ = writeln!(out, "RSA bound: openssl speed is not available here; no ratio printed");
        }
    }
    let workdir = tempfile::tempdir().map_err(|e| setup(&e))?;
    let (private_pem, public_pem) = generate_key_pair_pem().map_err(|e| setup(&e))?;
    let rsa_alone = rsa_alone_per_s(&private_pem, &public_pem, cores).map_err(|e| setup(&e))?;
    let _ = writeln!(out, "RSA alone (aws-lc-rs, PKCS#1 v1.5, {cores} threads, this process): {rsa_alone:.0}/s");
    let _ = writeln!(out, "preparing: {messages} encrypted records in the archive simulator (not timed)");
    let prepared = Instant::now();
    let simulator =
        ArchiveSimulator::start(CORP_ID, SECRET, messages, &[(1, public_pem)], 0, 7).await.map_err(|e| setup(&e))?;
    let library = stub_sdk::install(workdir.path()).map_err(|e| setup(&e))?;
    let _ = writeln!(out, "prepared in {:.1} s", prepared.elapsed().as_secs_f64());
    let config = bench_config(&simulator, &workdir, &private_pem, &library, page_limit).map_err(|e| setup(&e))?;
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics)).map_err(|e| setup(&e))?;
    let (store, ingestor) = build_ingestor(&config, upstream, metrics).map_err(|e| setup(&e))?;
    // The search indexer runs beside the pull as in the service, woken by each content commit.
    let wake = ingestor.content_wake().ok_or_else(|| setup(&"no classic corp"))?;
    let search = Search::open(&config.search.path, Arc::clone(&store) as _, true).map_err(|e| setup(&e))?;
    let search = Arc::new(search.with_wake(wake));
    let (stop_indexer, shutdown) = background::shutdown_channel();
    let pace = Pace {
        idle: Some(Duration::from_secs(1)),
        backoff: Backoff { base: Duration::from_millis(50), max: Duration::from_secs(1) },
    };
    let indexer = background::spawn(Arc::new(Indexer::new(Arc::clone(&search))), search.wake(), pace, shutdown);

    let started = Instant::now();
    let summary = ingestor.pull(CORP_ID, None).await?;
    let pulled = started.elapsed();
    while !search.wait_current(Duration::from_secs(60)).await.map_err(|e| BenchError::Verify(e.to_string()))? {}
    let elapsed = started.elapsed();
    stop_indexer.stop();
    let _ = indexer.await;
    let _ = writeln!(
        out,
        "pulled and committed in {:.2} s; every message indexed and searchable {:.0} ms after the last commit ({} documents)",
        pulled.as_secs_f64(),
        (elapsed - pulled).as_secs_f64() * 1000.0,
        search.num_docs()
    );

    let worker_rss = match ingestor.archive_source() {
        Some(source) => source.supervisor().worker_pid().await.and_then(process_peak_rss_kib),
        None => None,
    };
    let status_store = Arc::clone(&store);
    let status =
        blocking(move || status_store.ingest_status(CORP_ID)).await.map_err(|e| BenchError::Verify(e.to_string()))?;
    let ok = status.content.iter().find(|(status, _)| *status == ContentStatus::Ok).map_or(0, |(_, count)| *count);
    if summary.inserted != messages || ok != messages as i64 {
        return Err(BenchError::Verify(format!(
            "stored {} of {messages} records, {ok} with content ok ({:?})",
            summary.inserted, status.content
        )));
    }
    let samples: Vec<_> =
        (1..=messages as u64).step_by((messages / SAMPLE).max(1)).filter_map(|seq| simulator.record(seq)).collect();
    let sample_store = Arc::clone(&store);
    let msgids: Vec<String> = samples.iter().map(|record| record.msgid.clone()).collect();
    let stored =
        blocking(move || msgids.iter().map(|msgid| sample_store.record(CORP_ID, msgid)).collect::<Result<Vec<_>, _>>())
            .await
            .map_err(|e| BenchError::Verify(e.to_string()))?;
    for (sample, stored) in samples.iter().zip(&stored) {
        let content = stored
            .as_ref()
            .and_then(|stored| stored.record.archive.as_ref())
            .and_then(|archive| archive.content.as_deref())
            .and_then(|content| serde_json::from_str::<Value>(content).ok());
        if content != serde_json::from_str::<Value>(&sample.plaintext).ok() {
            return Err(BenchError::Verify(format!("seq {} has the wrong content", sample.seq)));
        }
    }
    let report = IngestReport { messages, elapsed, peak_rss_kib: peak_rss_kib() };
    let _ = writeln!(
        out,
        "pages: {} of up to {page_limit}; RSA threads: {}; verified the content of {} records against the simulator",
        summary.pages,
        config.ingest.rsa_threads,
        samples.len()
    );
    if let Some(kib) = report.peak_rss_kib {
        let _ = writeln!(out, "peak RSS: this process (service and simulator) {:.1} MiB", kib as f64 / 1024.0);
    }
    if let Some(kib) = worker_rss {
        let _ = writeln!(out, "peak RSS: the finance worker {:.1} MiB", kib as f64 / 1024.0);
    }
    let _ = writeln!(out, "of RSA alone in this process: {:.0}%", 100.0 * report.rate() / rsa_alone);
    // A VM's speed drifts: the bound is measured again after the run and the two averaged.
    if let Some(before) = bound_before {
        let after = openssl_rsa_sign_per_s(cores);
        if let Some(after) = after {
            let _ = writeln!(out, "RSA bound after the run: {after:.0} private operations/s");
        }
        let bound = after.map_or(before, |after| (before + after) / 2.0);
        let _ = writeln!(out, "of the RSA bound: {:.0}%", 100.0 * report.rate() / bound);
    }
    let _ = writeln!(out, "ingest: {messages} messages in {:.2} s = {:.0} msg/s", elapsed.as_secs_f64(), report.rate());
    Ok(report)
}

fn bench_config(
    simulator: &ArchiveSimulator,
    workdir: &tempfile::TempDir,
    private_pem: &str,
    library: &std::path::Path,
    page_limit: u32,
) -> Result<Config, crate::config::ConfigError> {
    let storage = workdir.path().join("bench.sqlite");
    let worker = std::env::current_exe().map(|path| path.display().to_string()).unwrap_or_default();
    let text = format!(
        r#"
[storage]
path = {storage:?}
[upstream]
base_url = "http://127.0.0.1:9"
[ingest]
poll_interval_s = 0
[finance_sdk]
library = {library:?}
proxy = "{proxy}"
page_limit = {page_limit}
worker = {worker:?}
[media]
path = {media:?}
[search]
path = {search:?}
[[corp]]
corp_id = "{CORP_ID}"
archive = "finance_sdk"
archive_secret = "{SECRET}"
token = "benchToken0123"
encoding_aes_key = "{aes_key}"
private_keys = [ {{ version = 1, pem = """{private_pem}""" }} ]
"#,
        storage = storage.display().to_string(),
        media = workdir.path().join("media").display().to_string(),
        search = workdir.path().join("search").display().to_string(),
        library = library.display().to_string(),
        proxy = simulator.proxy(),
        aes_key = "b".repeat(43),
    );
    Config::from_toml_str(&text, Vec::new(), None)
}

/// RSA-2048 decryptions per second of 88-character keys with this build's own RSA (aws-lc-rs),
/// on `threads` threads: what the pipeline would reach if RSA were all it did.
fn rsa_alone_per_s(private_pem: &str, public_pem: &str, threads: usize) -> Result<f64, String> {
    use rayon::prelude::*;
    const KEYS: usize = 6000;
    let encryptor = crate::crypto::PublicKeyEncryptor::from_pem(public_pem).map_err(|e| e.to_string())?;
    let mut ring = crate::crypto::KeyRing::default();
    let key = crate::crypto::parse_private_key(private_pem).map_err(|e| e.to_string())?;
    ring.insert(1, key, crate::crypto::RsaPadding::Pkcs1).map_err(|e| e.to_string())?;
    let secret = "k".repeat(88);
    let ciphertexts: Vec<String> = (0..KEYS)
        .map(|_| encryptor.encrypt_base64(secret.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let decrypted = pool.install(|| ciphertexts.par_iter().filter(|c| ring.decrypt_secret_key(1, c).is_ok()).count());
    if decrypted != KEYS {
        return Err("RSA alone: a key did not decrypt".into());
    }
    Ok(KEYS as f64 / started.elapsed().as_secs_f64())
}

/// `openssl speed -multi <cores> -seconds 3 rsa2048`: RSA-2048 private operations (signs) per
/// second over all cores, or `None` without openssl.
fn openssl_rsa_sign_per_s(cores: usize) -> Option<f64> {
    let output = Command::new("openssl")
        .args(["speed", "-multi", &cores.to_string(), "-seconds", "3", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // The summary line: "rsa 2048 bits 0.000123s 0.000004s 8130.1 250000.0" (sign/s is the
    // second number from the end).
    let line = text.lines().rev().find(|line| line.trim_start().starts_with("rsa") && line.contains("2048"))?;
    let numbers: Vec<f64> = line.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    numbers.len().checked_sub(2).and_then(|index| numbers.get(index)).copied()
}
