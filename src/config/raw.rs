//! The serde layer: the TOML document as written, before secrets are resolved and values checked.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::crypto::RsaPadding;
use crate::domain::CorpId;
use serde::{Deserialize, Deserializer, de::Error as _};

use super::{
    AbilitiesConfig, BackgroundConfig, Config, ConfigError, CorpConfig, IngestConfig, LogConfig, LogFormat,
    MailboxConfig, PrivateKeyConfig, Secret, ServerConfig, StorageConfig, UpstreamConfig, validate_corps,
};
use super::{Archive, FinanceSdkConfig, MediaConfig, SearchConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    mailbox: RawMailbox,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    abilities: RawAbilities,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    finance_sdk: RawFinanceSdk,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    search: RawSearch,
    #[serde(default)]
    corp: Vec<RawCorp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFinanceSdk {
    library: String,
    proxy: String,
    #[serde(deserialize_with = "secret_text")]
    proxy_password: Option<String>,
    proxy_password_file: Option<PathBuf>,
    proxy_password_env: Option<String>,
    #[serde(deserialize_with = "lenient")]
    timeout_s: i32,
    #[serde(deserialize_with = "lenient")]
    call_deadline_ms: u64,
    #[serde(deserialize_with = "lenient")]
    page_limit: u32,
    /// The wecom-zone executable that runs workers; empty: this one.
    worker: String,
}

impl Default for RawFinanceSdk {
    fn default() -> Self {
        RawFinanceSdk {
            library: String::new(),
            proxy: String::new(),
            proxy_password: None,
            proxy_password_file: None,
            proxy_password_env: None,
            timeout_s: 10,
            call_deadline_ms: 30_000,
            page_limit: 1000,
            worker: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    path: PathBuf,
    #[serde(deserialize_with = "lenient")]
    max_file_bytes: u64,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia { path: PathBuf::from("data/media"), max_file_bytes: 100 << 20 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSearch {
    path: PathBuf,
}

impl Default for RawSearch {
    fn default() -> Self {
        RawSearch { path: PathBuf::from("data/search") }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDelivery {
    #[serde(deserialize_with = "lenient")]
    max_attempts: u32,
    #[serde(deserialize_with = "lenient")]
    retry_max_s: u64,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery { max_attempts: 30, retry_max_s: 600 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    #[serde(deserialize_with = "lenient")]
    body_limit_bytes: usize,
    #[serde(deserialize_with = "lenient")]
    max_clock_skew_s: u64,
    #[serde(deserialize_with = "lenient")]
    request_timeout_ms: u64,
    #[serde(deserialize_with = "lenient")]
    duplicate_window_s: u64,
    #[serde(deserialize_with = "lenient")]
    header_read_timeout_ms: u64,
    #[serde(deserialize_with = "lenient")]
    max_connections: usize,
    #[serde(deserialize_with = "lenient")]
    body_buffer_bytes: usize,
    #[serde(deserialize_with = "lenient")]
    shutdown_grace_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:8080".into(),
            body_limit_bytes: 1_048_576,
            max_clock_skew_s: 300,
            request_timeout_ms: 10_000,
            duplicate_window_s: 86_400,
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            body_buffer_bytes: 64 << 20,
            shutdown_grace_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    path: PathBuf,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage { path: PathBuf::from("data/wecom-zone.sqlite") }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    base_url: String,
    #[serde(deserialize_with = "lenient")]
    timeout_ms: u64,
    #[serde(deserialize_with = "lenient")]
    max_retries: u32,
    #[serde(deserialize_with = "lenient")]
    retry_base_ms: u64,
    #[serde(deserialize_with = "lenient")]
    retry_max_ms: u64,
    #[serde(deserialize_with = "lenient")]
    token_refresh_margin_s: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            base_url: "https://qyapi.weixin.qq.com".into(),
            timeout_ms: 10_000,
            max_retries: 6,
            retry_base_ms: 200,
            retry_max_ms: 10_000,
            token_refresh_margin_s: 300,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIngest {
    #[serde(deserialize_with = "lenient")]
    page_limit: u32,
    #[serde(deserialize_with = "lenient")]
    poll_interval_s: u64,
    #[serde(deserialize_with = "lenient")]
    rsa_threads: usize,
    rsa_padding: String,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest { page_limit: 1000, poll_interval_s: 300, rsa_threads: 0, rsa_padding: "pkcs1".into() }
    }
}

impl RawIngest {
    fn validate(self) -> Result<IngestConfig, ConfigError> {
        if !(1..=1000).contains(&self.page_limit) {
            return Err(ConfigError::invalid("ingest.page_limit", "must be 1 to 1000"));
        }
        let rsa_padding = match self.rsa_padding.to_ascii_lowercase().as_str() {
            "pkcs1" => RsaPadding::Pkcs1,
            "oaep" => RsaPadding::OaepSha1,
            _ => return Err(ConfigError::invalid("ingest.rsa_padding", "must be `pkcs1` or `oaep`")),
        };
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(IngestConfig {
            page_limit: self.page_limit,
            poll_interval: (self.poll_interval_s > 0).then(|| Duration::from_secs(self.poll_interval_s)),
            rsa_threads: if self.rsa_threads == 0 { available } else { self.rsa_threads },
            rsa_padding,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMailbox {
    #[serde(deserialize_with = "lenient")]
    ttl_s: u64,
    #[serde(deserialize_with = "lenient")]
    max_answer_bytes: usize,
}

impl Default for RawMailbox {
    fn default() -> Self {
        RawMailbox { ttl_s: 86_400, max_answer_bytes: 512 * 1024 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAbilities {
    invoke_apis: Vec<String>,
}

impl Default for RawAbilities {
    fn default() -> Self {
        RawAbilities { invoke_apis: super::DEFAULT_INVOKE_APIS.iter().map(|api| (*api).to_owned()).collect() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: "text".into(), level: "info".into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorp {
    #[serde(default)]
    corp_id: String,
    /// `zone` (default) or `finance_sdk`.
    #[serde(default)]
    archive: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    archive_secret: Option<String>,
    archive_secret_file: Option<PathBuf>,
    archive_secret_env: Option<String>,
    #[serde(default, deserialize_with = "lenient_option")]
    agent_id: Option<i64>,
    #[serde(default)]
    receive_ids: Vec<String>,
    #[serde(default)]
    private_keys: Vec<RawPrivateKey>,
    // Each secret may be inline, a file path (`*_file`) or an environment variable name (`*_env`).
    #[serde(default, deserialize_with = "secret_text")]
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    encoding_aes_key: Option<String>,
    encoding_aes_key_file: Option<PathBuf>,
    encoding_aes_key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivateKey {
    #[serde(deserialize_with = "lenient")]
    version: u32,
    path: Option<PathBuf>,
    #[serde(default, deserialize_with = "secret_text")]
    pem: Option<String>,
    pem_env: Option<String>,
}

type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl RawConfig {
    pub(super) fn from_table(table: toml::Table) -> Result<RawConfig, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
            let key = error.path().to_string();
            let key = if key == "." { "config".to_owned() } else { key };
            ConfigError::Invalid { key, message: error.into_inner().to_string() }
        })
    }

    pub(super) fn validate(self, lookup_env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let corps = self
            .corp
            .into_iter()
            .enumerate()
            .map(|(index, corp)| corp.resolve(index, lookup_env))
            .collect::<Result<Vec<_>, _>>()?;
        let ingest = self.ingest.validate()?;
        validate_corps(&corps, ingest.rsa_padding)?;
        let upstream = self.upstream.validate()?;
        let uses_finance_sdk = corps.iter().any(|corp| matches!(corp.archive, Archive::FinanceSdk { .. }));
        let finance_sdk = self.finance_sdk.validate(uses_finance_sdk, lookup_env)?;
        Ok(Config {
            finance_sdk,
            media: self.media.validate()?,
            search: SearchConfig { path: self.search.path },
            ingest,
            server: self.server.validate()?,
            storage: StorageConfig { path: self.storage.path },
            background: BackgroundConfig::new(&upstream, self.delivery.max_attempts, self.delivery.retry_max_s)?,
            upstream,
            mailbox: self.mailbox.validate()?,
            abilities: AbilitiesConfig { invoke_apis: self.abilities.invoke_apis },
            log: self.log.validate()?,
            corps,
            source: None,
        })
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let listen = SocketAddr::from_str(self.listen.trim())
            .map_err(|_| ConfigError::invalid("server.listen", "must be an address such as 0.0.0.0:8080"))?;
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("server.body_limit_bytes", "must be at least 1024"));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid("server.request_timeout_ms", "must be positive"));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::invalid("server.header_read_timeout_ms", "must be positive"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid("server.max_connections", "must be positive"));
        }
        if self.body_buffer_bytes < self.body_limit_bytes {
            return Err(ConfigError::invalid("server.body_buffer_bytes", "must be at least body_limit_bytes"));
        }
        Ok(ServerConfig {
            listen,
            body_limit_bytes: self.body_limit_bytes,
            max_clock_skew: (self.max_clock_skew_s > 0).then(|| Duration::from_secs(self.max_clock_skew_s)),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            max_connections: self.max_connections,
            body_buffer_bytes: self.body_buffer_bytes,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        })
    }
}

impl RawFinanceSdk {
    fn validate(self, required: bool, lookup_env: EnvLookup<'_>) -> Result<FinanceSdkConfig, ConfigError> {
        let library = self.library.trim();
        if required && library.is_empty() {
            return Err(ConfigError::invalid(
                "finance_sdk.library",
                "is required when a corp uses archive = \"finance_sdk\" (the path of libWeWorkFinanceSdk_C.so)",
            ));
        }
        if required && !Path::new(library).is_file() {
            return Err(ConfigError::invalid("finance_sdk.library", format!("no such file: {library}")));
        }
        if !(1..=1000).contains(&self.page_limit) {
            return Err(ConfigError::invalid("finance_sdk.page_limit", "must be 1 to 1000"));
        }
        if self.timeout_s <= 0 {
            return Err(ConfigError::invalid("finance_sdk.timeout_s", "must be positive"));
        }
        if self.call_deadline_ms < 1000 * self.timeout_s as u64 {
            return Err(ConfigError::invalid(
                "finance_sdk.call_deadline_ms",
                "must be at least timeout_s (the SDK's own network timeout) in milliseconds",
            ));
        }
        let proxy_password = match (&self.proxy_password, &self.proxy_password_file, &self.proxy_password_env) {
            (None, None, None) => Secret { value: SecretString::from(String::new()), origin: "none".into() },
            _ => resolve_secret(
                "finance_sdk.proxy_password",
                self.proxy_password,
                self.proxy_password_file,
                self.proxy_password_env,
                lookup_env,
            )?,
        };
        Ok(FinanceSdkConfig {
            library: (!library.is_empty()).then(|| PathBuf::from(library)),
            proxy: self.proxy.trim().to_owned(),
            proxy_password,
            timeout_s: self.timeout_s,
            call_deadline: Duration::from_millis(self.call_deadline_ms),
            page_limit: self.page_limit,
            worker: (!self.worker.trim().is_empty()).then(|| PathBuf::from(self.worker.trim())),
        })
    }
}

impl RawMedia {
    fn validate(self) -> Result<MediaConfig, ConfigError> {
        if self.max_file_bytes == 0 {
            return Err(ConfigError::invalid("media.max_file_bytes", "must be positive"));
        }
        Ok(MediaConfig { path: self.path, max_file_bytes: self.max_file_bytes })
    }
}

impl RawMailbox {
    fn validate(self) -> Result<MailboxConfig, ConfigError> {
        if self.ttl_s == 0 {
            return Err(ConfigError::invalid("mailbox.ttl_s", "must be positive"));
        }
        if self.max_answer_bytes < 4096 {
            return Err(ConfigError::invalid("mailbox.max_answer_bytes", "must be at least 4096"));
        }
        Ok(MailboxConfig { ttl: Duration::from_secs(self.ttl_s), max_answer_bytes: self.max_answer_bytes })
    }
}

impl RawUpstream {
    fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|error| ConfigError::invalid("upstream.base_url", format!("is not a URL: {error}")))?;
        match url.scheme() {
            "https" => {}
            // Plain HTTP would carry `corpsecret` and every access_token in clear: only to this
            // machine (a simulator, a local proxy).
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(ConfigError::invalid(
                    "upstream.base_url",
                    "must be https (plain http is allowed only to a loopback address)",
                ));
            }
            _ => return Err(ConfigError::invalid("upstream.base_url", "must be http or https")),
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::invalid("upstream.timeout_ms", "must be positive"));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err(ConfigError::invalid("upstream.retry_base_ms", "must be positive and at most retry_max_ms"));
        }
        Ok(UpstreamConfig {
            base_url: self.base_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            token_refresh_margin: Duration::from_secs(self.token_refresh_margin_s),
        })
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

impl RawLog {
    fn validate(self) -> Result<LogConfig, ConfigError> {
        let format = match self.format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(ConfigError::invalid("log.format", "must be `text` or `json`")),
        };
        Ok(LogConfig { format, level: self.level })
    }
}

impl RawCorp {
    fn resolve(self, index: usize, lookup_env: EnvLookup<'_>) -> Result<CorpConfig, ConfigError> {
        let key = |field: &str| format!("corp[{index}].{field}");
        let archive_secret_given =
            self.archive_secret.is_some() || self.archive_secret_file.is_some() || self.archive_secret_env.is_some();
        let archive = match self.archive.as_deref().map(str::trim) {
            None | Some("zone") => Archive::Zone,
            Some("finance_sdk") => Archive::FinanceSdk {
                secret: resolve_secret(
                    &key("archive_secret"),
                    self.archive_secret,
                    self.archive_secret_file,
                    self.archive_secret_env,
                    lookup_env,
                )?,
            },
            Some(_) => return Err(ConfigError::invalid(key("archive"), "must be `zone` or `finance_sdk`")),
        };
        if matches!(archive, Archive::Zone) && archive_secret_given {
            return Err(ConfigError::invalid(key("archive_secret"), "is used only with archive = \"finance_sdk\""));
        }
        // The app secret is for gettoken (zone APIs, spec_notify_app); a classic archive corp may
        // have none.
        let secret = match (&archive, &self.secret, &self.secret_file, &self.secret_env) {
            (Archive::FinanceSdk { .. }, None, None, None) => None,
            _ => Some(resolve_secret(&key("secret"), self.secret, self.secret_file, self.secret_env, lookup_env)?),
        };
        let token = resolve_secret(&key("token"), self.token, self.token_file, self.token_env, lookup_env)?;
        let encoding_aes_key = resolve_secret(
            &key("encoding_aes_key"),
            self.encoding_aes_key,
            self.encoding_aes_key_file,
            self.encoding_aes_key_env,
            lookup_env,
        )?;
        let private_keys = self
            .private_keys
            .into_iter()
            .enumerate()
            .map(|(key_index, raw)| {
                let pem_key = key(&format!("private_keys[{key_index}]"));
                let pem = resolve_secret(&pem_key, raw.pem, raw.path, raw.pem_env, lookup_env)?;
                Ok(PrivateKeyConfig { version: raw.version, pem })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(CorpConfig {
            archive,
            corp_id: CorpId::from(self.corp_id.trim()),
            agent_id: self.agent_id,
            secret,
            token,
            encoding_aes_key,
            extra_receive_ids: self.receive_ids,
            private_keys,
        })
    }
}

/// Exactly one of the three forms must be given. File contents lose trailing whitespace, so a
/// secret written by `echo` works.
fn resolve_secret(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env_name: Option<String>,
    lookup_env: EnvLookup<'_>,
) -> Result<Secret, ConfigError> {
    let (value, origin) = match (inline, file, env_name) {
        (Some(value), None, None) => (value, "inline".to_owned()),
        (None, Some(path), None) => {
            let value = std::fs::read_to_string(&path)
                .map_err(|error| ConfigError::invalid(key, format!("cannot read file {}: {error}", path.display())))?;
            (value.trim_end().to_owned(), format!("file {}", path.display()))
        }
        (None, None, Some(name)) => {
            let value = lookup_env(&name)
                .ok_or_else(|| ConfigError::invalid(key, format!("environment variable {name} is not set")))?;
            (value, format!("env {name}"))
        }
        (None, None, None) => return Err(ConfigError::invalid(key, "is required (inline, *_file or *_env)")),
        _ => return Err(ConfigError::invalid(key, "give only one of the inline, *_file and *_env forms")),
    };
    Ok(Secret { value: SecretString::from(value), origin })
}

/// An inline secret: a string, or an error that does not repeat the value (serde's own message for
/// `token = 123456` would quote the number).
fn secret_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<toml::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(toml::Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(D::Error::custom("must be a string (put the value in quotes)")),
    }
}

/// Accepts a value of type `T` or a string that parses as one (environment overrides are strings).
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ValueOrText<T> {
        Value(T),
        Text(String),
    }
    match ValueOrText::<T>::deserialize(deserializer)? {
        ValueOrText::Value(value) => Ok(value),
        ValueOrText::Text(text) => text.trim().parse().map_err(D::Error::custom),
    }
}

fn lenient_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    lenient(deserializer).map(Some)
}
