//! Configuration: a TOML file, then `WECOM_ZONE__…` environment overrides, then secrets resolved
//! from inline values, `*_file` paths or `*_env` variables, then validation into typed values.
//!
//! Secrets live in [`SecretString`] from the moment they are read: their `Debug` prints
//! `[REDACTED]`, and [`Config::summary`] names where each secret came from, never its value.

mod env;
mod raw;
mod samples;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{KeyError, KeyRing, RsaPadding, WxBizMsgCrypt, parse_private_key, public_key_fingerprint};
use crate::domain::CorpId;

pub use env::PREFIX as ENV_PREFIX;

/// The default file `serve` and `check-config` read when no `--config` is given.
pub const DEFAULT_PATH: &str = "config/wecom-zone.toml";

/// The zone APIs `invoke_<api>` may call when `[abilities] invoke_apis` is not configured.
pub const DEFAULT_INVOKE_APIS: &[&str] = &[
    "search_msg",
    "search_chat",
    "search_contact_or_customer",
    "get_group_chat",
    "get_agree_status_single",
    "get_agree_status_room",
    "create_rule",
    "get_rule_list",
    "get_rule_detail",
    "update_rule",
    "delete_rule",
    "get_hit_msg_list",
    "create_sentiment_task",
    "get_sentiment_result",
    "create_summary_task",
    "get_summary_result",
    "create_customer_tag_task",
    "get_customer_tag_result",
    "create_recommend_dialog_task",
    "get_recommend_dialog_result",
    "create_ww_model_task",
    "get_ww_model_result",
    "create_model_task",
    "get_model_task_result",
    "create_program_task",
    "get_program_task_result",
    "create_spam_task",
    "get_spam_result",
    "create_chatdata_export_job",
    "get_chatdata_export_job_status",
    "knowledge_base_list",
];

/// A problem that stops the service from starting. Messages name the key and never the value
/// of a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("environment variable {variable} {problem}")]
    Env { variable: String, problem: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub upstream: UpstreamConfig,
    pub mailbox: MailboxConfig,
    pub log: LogConfig,
    pub ingest: IngestConfig,
    pub abilities: AbilitiesConfig,
    pub background: BackgroundConfig,
    pub finance_sdk: FinanceSdkConfig,
    pub media: MediaConfig,
    pub search: SearchConfig,
    pub corps: Vec<CorpConfig>,
    /// The file the configuration was read from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Larger request bodies are answered 413 before they are read whole.
    pub body_limit_bytes: usize,
    /// Callbacks whose timestamp is further than this from our clock are answered 401;
    /// `None` disables the check (the official libraries do not check at all).
    pub max_clock_skew: Option<Duration>,
    /// A request that takes longer is answered 408.
    pub request_timeout: Duration,
    /// How long a delivery is remembered so that a re-delivery is acknowledged, not re-processed.
    pub duplicate_window: Duration,
    /// A connection that takes longer to send a request's headers (or stays idle between
    /// requests this long) is closed.
    pub header_read_timeout: Duration,
    /// Connections beyond this many are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Request bodies being read, all together, hold at most this many bytes; a body that would
    /// pass it is answered 503.
    pub body_buffer_bytes: usize,
    /// At shutdown, open connections get this long to finish before they are closed.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub base_url: String,
    /// Per HTTP attempt.
    pub timeout: Duration,
    /// Retries after the first attempt for busy, rate-limit, 5xx, timeout and broken answers.
    pub max_retries: u32,
    /// Backoff before retry n is a random duration in `[0, min(retry_max, retry_base * 2^n)]`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A cached access_token is refreshed this long before it expires.
    pub token_refresh_margin: Duration,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `limit` of each `sync_msg` call (1..=1000).
    pub page_limit: u32,
    /// A safety pull per corp at this interval (and once at start-up); `None` disables the timer.
    pub poll_interval: Option<Duration>,
    /// Threads of the RSA pool (default: the available cores).
    pub rsa_threads: usize,
    pub rsa_padding: RsaPadding,
}

#[derive(Debug, Clone)]
pub struct MailboxConfig {
    /// How long a notified entry stays fetchable.
    pub ttl: Duration,
    /// A `get_callback_data` answer larger than this is paged.
    pub max_answer_bytes: usize,
}

/// Pacing of the background workers (pullers, notifier, job runner), derived from `[upstream]`.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundConfig {
    /// First backoff ceiling after a failed round: `upstream.retry_max_ms`, at least 100 ms
    /// (a round has already spent the upstream retries).
    pub retry_base: Duration,
    /// Backoff cap: one minute, or `retry_base` if that is longer.
    pub retry_max: Duration,
    /// An idle worker that nobody wakes runs a round this often anyway (pullers use
    /// `ingest.poll_interval_s` instead).
    pub idle_poll: Duration,
    /// Each mailbox notification and async result retries on its own schedule: before retry n,
    /// at least `retry_base` and at most `min(entry_retry_max, retry_base * 2^n)`.
    pub entry_retry_max: Duration,
    /// After this many failed attempts an entry becomes a dead letter (`[delivery] max_attempts`).
    pub max_attempts: u32,
}

impl BackgroundConfig {
    fn new(upstream: &UpstreamConfig, max_attempts: u32, retry_max_s: u64) -> Result<BackgroundConfig, ConfigError> {
        if max_attempts == 0 {
            return Err(ConfigError::invalid("delivery.max_attempts", "must be positive"));
        }
        let retry_base = upstream.retry_max.max(Duration::from_millis(100));
        Ok(BackgroundConfig {
            retry_base,
            retry_max: retry_base.max(Duration::from_secs(60)),
            idle_poll: Duration::from_secs(60),
            entry_retry_max: retry_base.max(Duration::from_secs(retry_max_s)),
            max_attempts,
        })
    }

    /// How each mailbox notification and async result is retried.
    pub fn entry_retry(&self) -> crate::background::EntryRetry {
        crate::background::EntryRetry {
            backoff: crate::background::Backoff { base: self.retry_base, max: self.entry_retry_max },
            max_attempts: self.max_attempts,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AbilitiesConfig {
    /// The zone APIs `invoke_<api>` may call.
    pub invoke_apis: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `wecom_zone=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

/// `[finance_sdk]`: the official SDK for corps on the classic archive.
#[derive(Debug, Clone)]
pub struct FinanceSdkConfig {
    /// `libWeWorkFinanceSdk_C.so`; required (and checked to exist) when a corp uses it.
    pub library: Option<PathBuf>,
    /// Passed to GetChatData / GetMediaData, e.g. `socks5://10.0.0.1:8081`.
    pub proxy: String,
    pub proxy_password: Secret,
    /// The SDK's own network timeout argument.
    pub timeout_s: i32,
    /// A worker call slower than this kills the worker.
    pub call_deadline: Duration,
    /// GetChatData's `limit` (at most 1000).
    pub page_limit: u32,
    /// The executable that runs `finance-worker`; `None`: this one.
    pub worker: Option<PathBuf>,
}

/// `[media]`: downloaded media files.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Content-addressed by md5.
    pub path: PathBuf,
    /// Larger files are not downloaded (status `too_large`).
    pub max_file_bytes: u64,
}

/// `[search]`: the full-text index of the classic archive's content.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The index's own folder; rebuildable from the store (`reindex`).
    pub path: PathBuf,
}

/// Where a corp's chat records come from.
#[derive(Debug, Clone)]
pub enum Archive {
    /// The zone's `sync_msg` over `[upstream]`.
    Zone,
    /// The classic 会话内容存档 through the official finance SDK, with its own Secret.
    FinanceSdk { secret: Secret },
}

/// One corporation served by this deployment.
#[derive(Debug, Clone)]
pub struct CorpConfig {
    pub corp_id: CorpId,
    pub archive: Archive,
    pub agent_id: Option<i64>,
    /// The app secret for `gettoken`; a classic-archive corp may have none.
    pub secret: Option<Secret>,
    /// The callback Token.
    pub token: Secret,
    /// The callback EncodingAESKey (43 characters).
    pub encoding_aes_key: Secret,
    /// ReceiveIds accepted besides `corp_id` (a suite id for third-party callbacks, for example).
    pub extra_receive_ids: Vec<String>,
    pub private_keys: Vec<PrivateKeyConfig>,
}

/// A secret value and a description of where it came from (for summaries, never the value).
#[derive(Debug, Clone)]
pub struct Secret {
    pub value: SecretString,
    pub origin: String,
}

impl Secret {
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

/// A private RSA key by version. The key is parsed by the key ring at start-up.
#[derive(Debug, Clone)]
pub struct PrivateKeyConfig {
    pub version: u32,
    pub pem: Secret,
}

impl CorpConfig {
    /// The callback crypto for this corp; the key was validated at load time.
    pub fn callback_crypto(&self) -> Result<WxBizMsgCrypt, crate::crypto::CryptoError> {
        WxBizMsgCrypt::new(self.token.expose(), self.encoding_aes_key.expose())
    }

    /// Parses every private key into a ring keyed by version.
    pub fn key_ring(&self, padding: RsaPadding) -> Result<KeyRing, (u32, KeyError)> {
        let mut ring = KeyRing::default();
        for key in &self.private_keys {
            let parsed = parse_private_key(key.pem.expose()).map_err(|error| (key.version, error))?;
            ring.insert(key.version, parsed, padding).map_err(|error| (key.version, error))?;
        }
        Ok(ring)
    }

    /// The RSA padding of this corp's message keys: the classic archive's is PKCS#1 v1.5
    /// (confirmed, reference §3.2) whatever `[ingest] rsa_padding` says for the zone's.
    pub fn rsa_padding(&self, zone_padding: RsaPadding) -> RsaPadding {
        match self.archive {
            Archive::Zone => zone_padding,
            Archive::FinanceSdk { .. } => RsaPadding::Pkcs1,
        }
    }

    /// Whether `receive_id` (from a decrypted callback) is one this corp accepts.
    pub fn accepts_receive_id(&self, receive_id: &[u8]) -> bool {
        receive_id == self.corp_id.as_bytes() || self.extra_receive_ids.iter().any(|id| id.as_bytes() == receive_id)
    }
}

impl Config {
    /// Loads `path` (or, without one, [`DEFAULT_PATH`] when it exists, else defaults only),
    /// applies the process environment and validates everything.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match path {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|default| default.exists()),
        };
        let text = match &path {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?
            }
            None => String::new(),
        };
        let mut config = Config::from_toml_str(&text, std::env::vars(), path.as_deref())?;
        config.source = path;
        Ok(config)
    }

    /// Parses TOML text with the given environment. `path` is used only in messages.
    pub fn from_toml_str(
        text: &str,
        variables: impl IntoIterator<Item = (String, String)>,
        path: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let shown_path = path.map_or_else(|| PathBuf::from("<defaults>"), Path::to_path_buf);
        let mut document: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigError::Toml {
            path: shown_path.clone(),
            message: error.message().to_owned(),
        })?;
        let variables: Vec<(String, String)> = variables.into_iter().collect();
        env::apply_overrides(&mut document, variables.iter().cloned())?;
        let raw = raw::RawConfig::from_table(document)?;
        raw.validate(&|name| variables.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone()))
    }

    pub fn corp(&self, corp_id: &str) -> Option<&CorpConfig> {
        self.corps.iter().find(|corp| corp.corp_id == corp_id)
    }

    /// A human-readable summary with every secret replaced by where it came from.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let source = self.source.as_ref().map_or("(defaults and environment only)".into(), |p| p.display().to_string());
        let skew = self.server.max_clock_skew.map_or("disabled".into(), |d| format!("{} s", d.as_secs()));
        out.push_str(&format!("config: {source}\n"));
        out.push_str(&format!(
            "server: listen {}, body limit {} bytes, clock skew {skew}, request timeout {} ms, duplicate window {} s\n",
            self.server.listen,
            self.server.body_limit_bytes,
            self.server.request_timeout.as_millis(),
            self.server.duplicate_window.as_secs()
        ));
        out.push_str(&format!("storage: {}\n", self.storage.path.display()));
        if self.corps.iter().any(|corp| matches!(corp.archive, Archive::FinanceSdk { .. })) {
            out.push_str(&format!(
                "classic archive: media {}, search index {}\n",
                self.media.path.display(),
                self.search.path.display()
            ));
        }
        out.push_str(&format!(
            "upstream: {} (timeout {} ms)\n",
            self.upstream.base_url,
            self.upstream.timeout.as_millis()
        ));
        out.push_str(&format!(
            "mailbox: ttl {} s, answers paged above {} bytes\n",
            self.mailbox.ttl.as_secs(),
            self.mailbox.max_answer_bytes
        ));
        out.push_str(&format!("abilities: invoke_ allow-list of {} APIs\n", self.abilities.invoke_apis.len()));
        out.push_str(&format!("log: {:?}, level {}\n", self.log.format, self.log.level));
        let poll = self.ingest.poll_interval.map_or("disabled".into(), |d| format!("every {} s", d.as_secs()));
        out.push_str(&format!(
            "ingest: pages of {}, safety poll {poll}, {} RSA threads, padding {:?}\n",
            self.ingest.page_limit, self.ingest.rsa_threads, self.ingest.rsa_padding
        ));
        for corp in &self.corps {
            let agent = corp.agent_id.map_or("-".into(), |id| id.to_string());
            out.push_str(&format!("corp {}: agent_id {agent}\n", corp.corp_id));
            match &corp.secret {
                Some(secret) => out.push_str(&format!("  secret: [redacted] ({})\n", secret.origin)),
                None => out.push_str("  secret: none (no zone API calls)\n"),
            }
            if let Archive::FinanceSdk { secret } = &corp.archive {
                out.push_str(&format!("  archive: finance_sdk, archive_secret [redacted] ({})\n", secret.origin));
            }
            out.push_str(&format!("  token: [redacted] ({})\n", corp.token.origin));
            out.push_str(&format!("  encoding_aes_key: [redacted] ({}), valid\n", corp.encoding_aes_key.origin));
            if !corp.extra_receive_ids.is_empty() {
                out.push_str(&format!("  extra receive ids: {}\n", corp.extra_receive_ids.join(", ")));
            }
            for key in &corp.private_keys {
                out.push_str(&format!(
                    "  private key v{}: RSA-2048, valid, [redacted] ({})\n",
                    key.version, key.pem.origin
                ));
            }
        }
        out
    }
}

/// Checks everything that can be checked without IO beyond reading secrets.
fn validate_corps(corps: &[CorpConfig], padding: RsaPadding) -> Result<(), ConfigError> {
    if corps.is_empty() {
        return Err(ConfigError::invalid("corp", "no [[corp]] is configured; at least one is required"));
    }
    let mut seen = BTreeSet::new();
    for (index, corp) in corps.iter().enumerate() {
        let key = |field: &str| format!("corp[{index}].{field}");
        if corp.corp_id.trim().is_empty() {
            return Err(ConfigError::invalid(key("corp_id"), "must not be empty"));
        }
        if !seen.insert(corp.corp_id.as_str()) {
            return Err(ConfigError::invalid(key("corp_id"), format!("`{}` is configured twice", corp.corp_id)));
        }
        let token = corp.token.expose();
        if token.is_empty() || token.len() > 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::invalid(key("token"), "must be 1 to 32 letters or digits"));
        }
        if corp.secret.as_ref().is_some_and(|secret| secret.expose().is_empty()) {
            return Err(ConfigError::invalid(key("secret"), "must not be empty"));
        }
        if let Archive::FinanceSdk { secret } = &corp.archive {
            if secret.expose().is_empty() || secret.expose().bytes().any(|byte| byte <= b' ') {
                return Err(ConfigError::invalid(
                    key("archive_secret"),
                    "must be the 会话内容存档 Secret, without spaces",
                ));
            }
        }
        corp.callback_crypto().map_err(|error| ConfigError::invalid(key("encoding_aes_key"), error.to_string()))?;
        corp.key_ring(corp.rsa_padding(padding)).map_err(|(version, error)| {
            ConfigError::invalid(key("private_keys"), format!("version {version}: {error}"))
        })?;
        refuse_samples(corp, &key)?;
    }
    refuse_shared_identities(corps)
}

/// WeCom's published sample credentials and placeholder secrets are public knowledge: a
/// deployment using them accepts forged callbacks. So a copied example config never goes live.
fn refuse_samples(corp: &CorpConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    const PUBLISHED: &str = "is a published sample value; generate your own in the WeCom admin console";
    const PLACEHOLDER: &str = "is a placeholder; set the real value";
    if samples::is_sample_token(corp.token.expose()) {
        return Err(ConfigError::invalid(key("token"), PUBLISHED));
    }
    if samples::is_sample_aes_key(corp.encoding_aes_key.expose()) {
        return Err(ConfigError::invalid(key("encoding_aes_key"), PUBLISHED));
    }
    if corp.secret.as_ref().is_some_and(|secret| samples::is_placeholder(secret.expose())) {
        return Err(ConfigError::invalid(key("secret"), PLACEHOLDER));
    }
    if let Archive::FinanceSdk { secret } = &corp.archive {
        if samples::is_placeholder(secret.expose()) {
            return Err(ConfigError::invalid(key("archive_secret"), PLACEHOLDER));
        }
    }
    if corp.private_keys.is_empty() {
        return Err(ConfigError::invalid(
            key("private_keys"),
            "no private key: records could not be decrypted (`wecom-zone keygen --out keys --version N` makes one)",
        ));
    }
    for (index, private_key) in corp.private_keys.iter().enumerate() {
        let published = parse_private_key(private_key.pem.expose())
            .and_then(|parsed| public_key_fingerprint(&parsed))
            .is_ok_and(|fingerprint| samples::is_sample_private_key(&fingerprint));
        if published {
            return Err(ConfigError::invalid(key(&format!("private_keys[{index}]")), PUBLISHED));
        }
    }
    Ok(())
}

/// Two corps must never be confusable: a request for one could otherwise be authenticated, or
/// addressed, as the other. So no two share a callback Token + EncodingAESKey, and no receive id
/// (a corp id or one of `receive_ids`) belongs to two corps.
fn refuse_shared_identities(corps: &[CorpConfig]) -> Result<(), ConfigError> {
    for (later, corp) in corps.iter().enumerate().skip(1) {
        for earlier in &corps[..later] {
            let key = |field: &str| format!("corp[{later}].{field}");
            if corp.token.expose() == earlier.token.expose()
                && corp.encoding_aes_key.expose() == earlier.encoding_aes_key.expose()
            {
                return Err(ConfigError::invalid(
                    key("token"),
                    format!(
                        "corp {} uses the same token and encoding_aes_key; each corp needs its own",
                        earlier.corp_id
                    ),
                ));
            }
            let receive_ids = |of: &CorpConfig| {
                std::iter::once(of.corp_id.to_string())
                    .chain(of.extra_receive_ids.iter().cloned())
                    .collect::<BTreeSet<_>>()
            };
            if let Some(shared) = receive_ids(corp).intersection(&receive_ids(earlier)).next() {
                return Err(ConfigError::invalid(
                    key("receive_ids"),
                    format!("receive id `{shared}` also belongs to corp {}", earlier.corp_id),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
