//! The command line: parses arguments, runs a command, maps the outcome to an exit code
//! (0 ok, 2 usage or config error, 1 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::{self, RunError, StartError};
use crate::config::{Config, ConfigError};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(name = "wecom-zone", version, about = "WeCom 数据与智能专区 zone program")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (port 8080 by default).
    Serve {
        /// Config file; without it, config/wecom-zone.toml is read when present.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load the config, check every key, print a redacted summary.
    CheckConfig {
        /// Config file; without it, config/wecom-zone.toml is read when present.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write an RSA-2048 key pair (private_key_vN.pem, public_key_vN.pem) for WeCom's 消息加密公钥.
    Keygen {
        /// Folder to write the two files into (created if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The key version N WeCom will report in public_key_ver.
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// Probe a running service's /healthz (for container health checks; needs no curl).
    Healthcheck {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the real ingest pipeline (HTTP pull over loopback, RSA, SQLite commits) against the
    /// simulator. The corpus is encrypted before the clock starts.
    Ingest {
        /// How many messages to ingest.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// `limit` of each sync_msg call (1..=1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_limit: u32,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Parses `std::env::args` and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Keygen { out, version } => keygen(&out, version),
        Command::Bench { bench: BenchCommand::Ingest { messages, page_limit } } => bench_ingest(messages, page_limit),
        Command::Healthcheck { url, timeout_ms } => healthcheck(&url, Duration::from_millis(timeout_ms)),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|error: ConfigError| {
        eprintln!("wecom-zone: config error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    telemetry::init(config.log.format, &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wecom-zone: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(app::run(config, crate::http::shutdown_signal())) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "service failed");
            eprintln!("wecom-zone: {error}");
            let code =
                if matches!(error, RunError::Start(StartError::Key { .. })) { EXIT_CONFIG } else { EXIT_RUNTIME };
            ExitCode::from(code)
        }
    }
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    match load_config(path) {
        Ok(config) => {
            print!("{}", config.summary());
            println!("config ok");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let probe = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        client.get(url).send().await?.error_for_status()
    };
    let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(probe),
        Err(error) => {
            eprintln!("wecom-zone: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wecom-zone: unhealthy: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn keygen(out: &std::path::Path, version: u32) -> ExitCode {
    match crate::keys::write_key_pair(out, version) {
        Ok((private_path, public_path)) => {
            println!("wrote {} (keep it secret) and {}", private_path.display(), public_path.display());
            println!("upload the public key to WeCom as 消息加密公钥 version {version}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wecom-zone: keygen: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn bench_ingest(messages: usize, page_limit: u32) -> ExitCode {
    telemetry::init(crate::config::LogFormat::Text, "warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wecom-zone: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(crate::bench::ingest(messages, page_limit, &mut stdout)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wecom-zone: bench: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
