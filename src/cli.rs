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
    /// Run the service with an embedded WeCom simulator on loopback and walk through what it does.
    Demo {
        /// How many synthetic messages the simulator generates.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Exit after the walkthrough instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
        /// Listen address (default 127.0.0.1:8080, or a free port if that is taken).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Send an ability call or an event to a running service, as WeCom would, and print the answer.
    Call {
        /// Config file (for the corp's Token and EncodingAESKey, and the listen port).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The corp to act for (default: the first configured).
        #[arg(long)]
        corp: Option<String>,
        /// The service's callback URL (default: http://127.0.0.1:<listen port>/).
        #[arg(long)]
        url: Option<String>,
        /// Call this ability (`call_type` 1).
        #[arg(long, conflicts_with_all = ["event", "classic_event"])]
        ability: Option<String>,
        /// Send this zone event type (`call_type` 2), e.g. conversation_new_message.
        #[arg(long, conflicts_with = "classic_event")]
        event: Option<String>,
        /// Send this classic XML event, e.g. msgaudit_notify.
        #[arg(long)]
        classic_event: Option<String>,
        /// The ability's request_data, or the zone event's payload object (JSON).
        #[arg(long, default_value = "{}")]
        data: String,
        /// The notify_id of the call (for get_callback_data).
        #[arg(long, default_value = "")]
        notify_id: String,
        /// Make the call asynchronous with this job_info.
        #[arg(long = "async", value_name = "JOB_INFO")]
        job_info: Option<String>,
        /// Use the XML envelope instead of JSON.
        #[arg(long)]
        xml: bool,
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
    /// Serve the real service and a bare axum handler side by side on loopback, drive both with
    /// the same keep-alive load, and compare their request rates.
    FrontDoor {
        /// Measured seconds per target (split into alternating turns).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// Keep-alive connections of the load.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        connections: u64,
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
        Command::Demo { messages, exit, listen } => demo(messages, exit, listen),
        Command::Call { config, corp, url, ability, event, classic_event, data, notify_id, job_info, xml } => {
            let request = CallRequest { ability, event, classic_event, data, notify_id, job_info, xml };
            call(config, corp, url, request)
        }
        Command::Keygen { out, version } => keygen(&out, version),
        Command::Bench { bench: BenchCommand::Ingest { messages, page_limit } } => bench_ingest(messages, page_limit),
        Command::Bench { bench: BenchCommand::FrontDoor { seconds, connections } } => {
            bench_front_door(seconds, connections as usize)
        }
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
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
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
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
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

fn bench_front_door(seconds: u64, connections: usize) -> ExitCode {
    // The service logs at its default level, as `serve` does.
    telemetry::init(crate::config::LogFormat::Text, "info");
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(crate::bench::front_door::run(seconds, connections, &mut std::io::stdout())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wecom-zone: bench: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|error| {
        eprintln!("wecom-zone: cannot start the runtime: {error}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

fn demo(messages: usize, exit: bool, listen: Option<String>) -> ExitCode {
    if messages == 0 {
        eprintln!("wecom-zone: demo: --messages must be at least 1");
        return ExitCode::from(EXIT_CONFIG);
    }
    telemetry::init(crate::config::LogFormat::Text, "warn");
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = crate::demo::DemoOptions { messages, exit, listen };
    match runtime.block_on(crate::demo::run(options, &mut std::io::stdout())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wecom-zone: demo: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

struct CallRequest {
    ability: Option<String>,
    event: Option<String>,
    classic_event: Option<String>,
    data: String,
    notify_id: String,
    job_info: Option<String>,
    xml: bool,
}

fn call(config: Option<PathBuf>, corp: Option<String>, url: Option<String>, request: CallRequest) -> ExitCode {
    let config = match load_config(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let corp_config = match corp.as_deref() {
        Some(corp_id) => config.corp(corp_id),
        None => config.corps.first(),
    };
    let Some(corp_config) = corp_config else {
        eprintln!("wecom-zone: call: corp {} is not configured", corp.unwrap_or_default());
        return ExitCode::from(EXIT_CONFIG);
    };
    let Ok(data) = serde_json::from_str::<serde_json::Value>(&request.data) else {
        eprintln!("wecom-zone: call: --data is not valid JSON");
        return ExitCode::from(EXIT_CONFIG);
    };
    let corp_id = corp_config.corp_id.clone();
    let plaintext = match (&request.ability, &request.event, &request.classic_event) {
        (Some(ability), None, None) => {
            crate::client::ability_call(&corp_id, ability, &data, &request.notify_id, request.job_info.as_deref())
        }
        (None, Some(event), None) => crate::client::zone_event(&corp_id, event, &data),
        (None, None, Some(event)) => crate::client::classic_event(&corp_id, event),
        _ => {
            eprintln!("wecom-zone: call: give one of --ability, --event or --classic-event");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}/", config.server.listen.port()));
    let client = match crate::client::ZoneClient::new(
        &url,
        &corp_id,
        corp_config.token.expose(),
        corp_config.encoding_aes_key.expose(),
    ) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("wecom-zone: call: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let format = if request.xml { crate::crypto::EnvelopeFormat::Xml } else { crate::crypto::EnvelopeFormat::Json };
    match runtime.block_on(client.send(&plaintext, format)) {
        Ok(crate::client::Answer::Sealed(answer)) => {
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(crate::client::Answer::Text(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(crate::client::Answer::Refused { status, body }) => {
            eprintln!("wecom-zone: call: the service answered HTTP {status}: {body}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(error) => {
            eprintln!("wecom-zone: call: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
