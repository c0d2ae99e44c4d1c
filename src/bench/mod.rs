//! Benchmarks: `bench ingest` (here; `archive` for `--archive finance_sdk`), `bench abilities`
//! (`abilities`) and `bench front-door` (`front_door`).
//!
//! `wecom-zone bench ingest`: the real pipeline against the simulator on loopback.
//!
//! Before the clock starts: a key pair is generated, the simulator generates the corpus and
//! encrypts every message's secret key. The clock covers what production does: `sync_msg` pages
//! over loopback HTTP, JSON parsing, one RSA-2048 decryption per record, and committed SQLite
//! transactions (page + cursor). Afterwards every record is counted and a sample is checked
//! against the simulator's expected secret keys.

pub mod abilities;
pub mod archive;
pub mod front_door;
mod load;
pub mod search;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::build_ingestor;
use crate::config::Config;
use crate::crypto::generate_key_pair_pem;
use crate::metrics::Metrics;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::store::{RecordStore, blocking};
use crate::upstream::UpstreamClient;

const CORP_ID: &str = "wwbench0000000001";
/// Records checked one by one against the simulator after the run.
const SAMPLE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("ingest failed: {0}")]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("verification failed: {0}")]
    Verify(String),
}

#[derive(Debug, Clone)]
pub struct IngestReport {
    pub messages: usize,
    pub elapsed: Duration,
    pub peak_rss_kib: Option<u64>,
}

impl IngestReport {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

pub async fn ingest(messages: usize, page_limit: u32, out: &mut dyn Write) -> Result<IngestReport, BenchError> {
    let setup = |error: &dyn std::fmt::Display| BenchError::Setup(error.to_string());
    let workdir = tempfile::tempdir().map_err(|e| setup(&e))?;
    let (private_pem, public_pem) = generate_key_pair_pem().map_err(|e| setup(&e))?;
    let _ = writeln!(out, "preparing: encrypting {messages} secret keys in the simulator (not timed)");
    let prepared = Instant::now();
    let simulator = Simulator::start(SimulatorConfig::new(CORP_ID, messages, vec![(1, public_pem)]))
        .await
        .map_err(|e| setup(&e))?;
    let _ = writeln!(out, "prepared in {:.1} s", prepared.elapsed().as_secs_f64());
    let config = bench_config(&simulator, &workdir, &private_pem, page_limit).map_err(|e| setup(&e))?;
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics)).map_err(|e| setup(&e))?;
    let (store, ingestor) = build_ingestor(&config, upstream, metrics).map_err(|e| setup(&e))?;

    let started = Instant::now();
    let summary = ingestor.pull(CORP_ID, None).await?;
    let elapsed = started.elapsed();

    if summary.inserted != messages || summary.key_failures != 0 {
        return Err(BenchError::Verify(format!(
            "stored {} of {messages} records, {} without a key",
            summary.inserted, summary.key_failures
        )));
    }
    let samples: Vec<_> =
        (0..messages).step_by((messages / SAMPLE).max(1)).map(|index| simulator.expected(index)).collect();
    let msgids: Vec<String> = samples.iter().map(|expected| expected.msgid.clone()).collect();
    let stored =
        blocking(move || msgids.iter().map(|msgid| store.record(CORP_ID, msgid)).collect::<Result<Vec<_>, _>>())
            .await
            .map_err(|e| BenchError::Verify(e.to_string()))?;
    for (sample, (expected, stored)) in samples.iter().zip(&stored).enumerate() {
        let Some(stored) = stored else {
            return Err(BenchError::Verify(format!("sampled message {sample} is missing")));
        };
        if stored.record.secret_key.as_deref() != Some(expected.secret_key.as_str()) {
            return Err(BenchError::Verify(format!("sampled message {sample} has the wrong secret key")));
        }
    }
    let report = IngestReport { messages, elapsed, peak_rss_kib: peak_rss_kib() };
    let _ = writeln!(
        out,
        "pages: {} of up to {page_limit}; RSA threads: {}; verified {} records against the simulator",
        summary.pages,
        config.ingest.rsa_threads,
        SAMPLE.min(messages)
    );
    if let Some(kib) = report.peak_rss_kib {
        let _ = writeln!(out, "peak RSS (whole process, simulator included): {:.1} MiB", kib as f64 / 1024.0);
    }
    let _ = writeln!(out, "ingest: {messages} messages in {:.2} s = {:.0} msg/s", elapsed.as_secs_f64(), report.rate());
    Ok(report)
}

fn bench_config(
    simulator: &Simulator,
    workdir: &tempfile::TempDir,
    private_pem: &str,
    page_limit: u32,
) -> Result<Config, crate::config::ConfigError> {
    let storage = workdir.path().join("bench.sqlite");
    let text = format!(
        r#"
[storage]
path = {storage:?}
[upstream]
base_url = "{base_url}"
retry_base_ms = 20
retry_max_ms = 500
[ingest]
page_limit = {page_limit}
poll_interval_s = 0
{corp}"#,
        storage = storage.display().to_string(),
        base_url = simulator.base_url(),
        corp = simulator.corp_toml(&[format!("{{ version = 1, pem = \"\"\"{private_pem}\"\"\" }}")]),
    );
    Config::from_toml_str(&text, Vec::new(), None)
}

/// The process's peak resident set (`VmHWM`), where /proc is available.
pub fn peak_rss_kib() -> Option<u64> {
    process_peak_rss_kib("self")
}

/// Another process's peak resident set (`VmHWM`), by pid (or `self`).
pub fn process_peak_rss_kib(pid: impl std::fmt::Display) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
