//! The command line: parses arguments, runs a command, maps the outcome to an exit code
//! (0 ok, 2 usage or config error, 1 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::{self, RunError, StartError};
use crate::config::{Config, ConfigError};
use crate::telemetry;

mod search;

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
    /// Search the stored content of classic archive corps; print hits with highlighted snippets.
    Search {
        /// Config file; without it, config/wecom-zone.toml is read when present.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The corp to search (default: the only finance_sdk corp).
        #[arg(long)]
        corp: Option<String>,
        /// Whitespace-separated terms; a message matches when it contains every one.
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
        /// Only messages this user sent or received.
        #[arg(long)]
        userid: Option<String>,
        /// Only messages in this group chat.
        #[arg(long)]
        roomid: Option<String>,
        /// Only messages of this type (WeCom's msgtype, e.g. text, file).
        #[arg(long)]
        msgtype: Option<String>,
        /// Sent at or after: Unix seconds, or YYYY-MM-DD[ HH:MM[:SS]] in Beijing time (UTC+8).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Sent at or before: as --since (a bare date means the end of that day).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Hits to print (1 to 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Rebuild the search index from the store (the store is the truth). Stop the service first.
    Reindex {
        /// Config file; without it, config/wecom-zone.toml is read when present.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run one finance SDK worker (the service spawns these; they talk over stdin/stdout).
    #[command(hide = true)]
    FinanceWorker {
        /// libWeWorkFinanceSdk_C.so (or a library with the same C API).
        #[arg(long, value_name = "FILE")]
        library: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Store N synthetic records, then time each reading ability (list_messages with every
    /// filter and deep cursors, get_message, list_conversations, ingest_status): p50 and p95.
    Abilities {
        /// How many records to store first.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
    },
    /// Time the real ingest pipeline (HTTP pull over loopback, RSA, SQLite commits) against the
    /// simulator. The corpus is encrypted before the clock starts.
    Ingest {
        /// How many messages to ingest.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// `limit` of each sync_msg (or GetChatData) call (1..=1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_limit: u32,
        /// Which archive to pull: the zone's sync_msg, or the classic archive through the finance
        /// SDK worker (the stand-in SDK), measured against `openssl speed` in the same run.
        #[arg(long, value_enum, default_value_t = BenchArchive::Zone)]
        archive: BenchArchive,
    },
    /// Index N synthetic Chinese/English messages from a store, then time a fixed query mix,
    /// each query also as the SQLite LIKE scan a user would otherwise write.
    Search {
        /// How many messages to store and index.
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
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

/// Why a command failed; [`CliError::exit_code`] is the one mapping to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    /// Bad arguments or a config the command cannot use.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Run(#[from] RunError),
    /// Anything else that went wrong while the command ran.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// 2 for usage and configuration problems (a private key that does not load included), 1 for
    /// failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Run(RunError::Start(StartError::Key { .. })) => 2,
            CliError::Run(_) | CliError::Runtime(_) => 1,
        }
    }
}

fn runtime_error(context: &str, error: impl std::fmt::Display) -> CliError {
    CliError::Runtime(format!("{context}: {error}"))
}

/// Parses `std::env::args`, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wecom-zone: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Demo { messages, exit, listen } => demo(messages, exit, listen),
        Command::Call { config, corp, url, ability, event, classic_event, data, notify_id, job_info, xml } => {
            let request = CallRequest { ability, event, classic_event, data, notify_id, job_info, xml };
            call(config, corp, url, request)
        }
        Command::Keygen { out, version } => keygen(&out, version),
        Command::Bench { bench: BenchCommand::Ingest { messages, page_limit, archive } } => {
            bench_ingest(messages, page_limit, archive)
        }
        Command::Bench { bench: BenchCommand::Abilities { records } } => bench_abilities(records),
        Command::Bench { bench: BenchCommand::FrontDoor { seconds, connections } } => {
            bench_front_door(seconds, connections as usize)
        }
        Command::Bench { bench: BenchCommand::Search { messages } } => bench_search(messages),
        Command::Search { config, corp, query, userid, roomid, msgtype, since, until, limit } => {
            let filters = search::Filters { userid, roomid, msgtype, since, until, limit };
            search::search(config, corp, &query.join(" "), filters)
        }
        Command::Reindex { config } => search::reindex(config),
        Command::Healthcheck { url, timeout_ms } => healthcheck(&url, Duration::from_millis(timeout_ms)),
        Command::FinanceWorker { library } => match crate::finance::worker::run(&library) {
            0 => Ok(()),
            // The worker's own failures are reported on its pipe; the exit code only ends it.
            code => std::process::exit(code),
        },
    }
}

fn serve(path: Option<PathBuf>) -> Result<(), CliError> {
    let config = Config::load(path.as_deref())?;
    telemetry::init(config.log.format, &config.log.level);
    let outcome = runtime()?.block_on(app::run(config, crate::background::termination_signal()));
    match &outcome {
        Ok(()) => tracing::info!("stopped"),
        Err(error) => tracing::error!(%error, "service failed"),
    }
    Ok(outcome?)
}

fn check_config(path: Option<PathBuf>) -> Result<(), CliError> {
    let config = Config::load(path.as_deref())?;
    print!("{}", config.summary());
    println!("config ok");
    Ok(())
}

fn healthcheck(url: &str, timeout: Duration) -> Result<(), CliError> {
    let probe = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        client.get(url).send().await?.error_for_status()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| runtime_error("cannot start the runtime", error))?;
    runtime.block_on(probe).map_err(|error| runtime_error("unhealthy", error))?;
    Ok(())
}

fn keygen(out: &std::path::Path, version: u32) -> Result<(), CliError> {
    let (private_path, public_path) =
        crate::keys::write_key_pair(out, version).map_err(|error| runtime_error("keygen", error))?;
    println!("wrote {} (keep it secret) and {}", private_path.display(), public_path.display());
    println!("upload the public key to WeCom as 消息加密公钥 version {version}");
    Ok(())
}

/// The archives `bench ingest` can pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchArchive {
    Zone,
    #[value(name = "finance_sdk")]
    FinanceSdk,
}

fn bench_ingest(messages: usize, page_limit: u32, archive: BenchArchive) -> Result<(), CliError> {
    telemetry::init(crate::config::LogFormat::Text, "warn");
    let out = &mut std::io::stdout();
    let run = async {
        match archive {
            BenchArchive::Zone => crate::bench::ingest(messages, page_limit, out).await,
            BenchArchive::FinanceSdk => crate::bench::archive::ingest(messages, page_limit, out).await,
        }
    };
    runtime()?.block_on(run).map_err(|error| runtime_error("bench", error))?;
    Ok(())
}

fn bench_abilities(records: usize) -> Result<(), CliError> {
    telemetry::init(crate::config::LogFormat::Text, "warn");
    runtime()?
        .block_on(crate::bench::abilities::run(records, &mut std::io::stdout()))
        .map_err(|error| runtime_error("bench", error))?;
    Ok(())
}

fn bench_search(messages: usize) -> Result<(), CliError> {
    if messages == 0 {
        return Err(CliError::Usage("bench search: --messages must be at least 1".into()));
    }
    telemetry::init(crate::config::LogFormat::Text, "warn");
    crate::bench::search::run(messages, &mut std::io::stdout()).map_err(|error| runtime_error("bench", error))?;
    Ok(())
}

fn bench_front_door(seconds: u64, connections: usize) -> Result<(), CliError> {
    // The service logs at its default level, as `serve` does.
    telemetry::init(crate::config::LogFormat::Text, "info");
    runtime()?
        .block_on(crate::bench::front_door::run(seconds, connections, &mut std::io::stdout()))
        .map_err(|error| runtime_error("bench", error))?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new().map_err(|error| runtime_error("cannot start the runtime", error))
}

fn demo(messages: usize, exit: bool, listen: Option<String>) -> Result<(), CliError> {
    if messages == 0 {
        return Err(CliError::Usage("demo: --messages must be at least 1".into()));
    }
    telemetry::init(crate::config::LogFormat::Text, "warn");
    let options = crate::demo::DemoOptions { messages, exit, listen };
    runtime()?
        .block_on(crate::demo::run(options, &mut std::io::stdout()))
        .map_err(|error| runtime_error("demo", error))?;
    Ok(())
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

fn call(
    config: Option<PathBuf>,
    corp: Option<String>,
    url: Option<String>,
    request: CallRequest,
) -> Result<(), CliError> {
    let config = Config::load(config.as_deref())?;
    let corp_config = match corp.as_deref() {
        Some(corp_id) => config.corp(corp_id),
        None => config.corps.first(),
    };
    let Some(corp_config) = corp_config else {
        return Err(CliError::Usage(format!("call: corp {} is not configured", corp.unwrap_or_default())));
    };
    let data = serde_json::from_str::<serde_json::Value>(&request.data)
        .map_err(|_| CliError::Usage("call: --data is not valid JSON".into()))?;
    let corp_id = corp_config.corp_id.clone();
    let plaintext = match (&request.ability, &request.event, &request.classic_event) {
        (Some(ability), None, None) => {
            crate::client::ability_call(&corp_id, ability, &data, &request.notify_id, request.job_info.as_deref())
        }
        (None, Some(event), None) => crate::client::zone_event(&corp_id, event, &data),
        (None, None, Some(event)) => crate::client::classic_event(&corp_id, event),
        _ => return Err(CliError::Usage("call: give one of --ability, --event or --classic-event".into())),
    };
    let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}/", config.server.listen.port()));
    let client = crate::client::ZoneClient::new(
        &url,
        &corp_id,
        corp_config.token.expose(),
        corp_config.encoding_aes_key.expose(),
    )
    .map_err(|error| CliError::Usage(format!("call: {error}")))?;
    let format = if request.xml { crate::crypto::EnvelopeFormat::Xml } else { crate::crypto::EnvelopeFormat::Json };
    match runtime()?.block_on(client.send(&plaintext, format)) {
        Ok(crate::client::Answer::Sealed(answer)) => {
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            Ok(())
        }
        Ok(crate::client::Answer::Text(text)) => {
            println!("{text}");
            Ok(())
        }
        Ok(crate::client::Answer::Refused { status, body }) => {
            Err(CliError::Runtime(format!("call: the service answered HTTP {status}: {body}")))
        }
        Err(error) => Err(runtime_error("call", error)),
    }
}
