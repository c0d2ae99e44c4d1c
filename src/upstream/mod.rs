//! The WeCom client: `gettoken` per corp with a single-flight cache, and `invoke(api, body)` for
//! `POST /cgi-bin/chatdata/{api}` with retries.
//!
//! Retried with capped, jittered exponential backoff: errcode -1 (busy), 45009 and 45033 (rate),
//! HTTP 5xx, timeouts, network failures and truncated or invalid JSON. On 40014, 42001 or 41001 the
//! token is refreshed once and the call retried once. Every other errcode is returned as
//! [`UpstreamError::Api`], unchanged.

mod sync_msg;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use sync_msg::{EncryptInfo, Party, SyncMsgItem, SyncMsgRequest, SyncMsgResponse};
pub use token::TokenCache;

use crate::background::Backoff;
use crate::config::{Config, UpstreamConfig};
use crate::domain::CorpId;
use crate::metrics::Metrics;

/// errcodes that mean "the access_token is invalid, expired or missing".
const TOKEN_ERRCODES: [i64; 3] = [40014, 42001, 41001];
/// errcodes that mean "try again later".
const RETRY_ERRCODES: [i64; 3] = [-1, 45009, 45033];
/// The largest answer read from WeCom (a full `sync_msg` page is about 1 MiB); a larger one is
/// refused, not buffered.
const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Why a retryable attempt failed; also the `cause` label of the retry metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    Busy,
    RateLimit,
    ServerError,
    Timeout,
    Network,
    BrokenBody,
}

impl RetryCause {
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::Busy => "busy",
            RetryCause::RateLimit => "rate_limit",
            RetryCause::ServerError => "http_5xx",
            RetryCause::Timeout => "timeout",
            RetryCause::Network => "network",
            RetryCause::BrokenBody => "broken_body",
        }
    }

    fn from_errcode(errcode: i64) -> RetryCause {
        if errcode == -1 { RetryCause::Busy } else { RetryCause::RateLimit }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// WeCom answered with an errcode that is not retried; passed on as it is.
    #[error("WeCom errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("gave up after {attempts} attempts, last failure: {}", .last.label())]
    Exhausted { attempts: u32, last: RetryCause },
    #[error("WeCom answered HTTP {0}")]
    Status(u16),
    #[error("no credentials for corp {0}")]
    UnknownCorp(String),
    #[error("WeCom's answer exceeds {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
    /// A call that must not run twice failed after it was sent: it may have taken effect, so
    /// it is not retried.
    #[error("the call may have reached WeCom and is not repeated (last failure: {})", .0.label())]
    Uncertain(RetryCause),
    #[error("no answer within the call's deadline")]
    Deadline,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl UpstreamError {
    /// The errcode to hand to an application: WeCom's own, or -1 (busy) for transport failures.
    pub fn errcode(&self) -> i64 {
        match self {
            UpstreamError::Api { errcode, .. } => *errcode,
            _ => -1,
        }
    }
}

#[derive(Deserialize)]
struct ErrorHeader {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Cheap to clone: the reqwest client and the token cache are shared handles.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    max_retries: u32,
    backoff: Backoff,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    /// A pass-through call answers within the request that asked for it: inside the request
    /// timeout, with time left to seal the answer.
    pass_through_deadline: Duration,
}

/// Whether an attempt may be repeated after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads and idempotent writes (sync_msg, spec_notify_app with our notify_id, job callbacks):
    /// every retryable failure is retried.
    Safe,
    /// The application's pass-through calls (`create_rule`, `create_*_task`): retried only when
    /// WeCom answered that it did not do it (busy, rate limit) or the connection never opened.
    Once,
}

impl UpstreamClient {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<UpstreamClient, UpstreamError> {
        let upstream: &UpstreamConfig = &config.upstream;
        let http = reqwest::Client::builder()
            .timeout(upstream.timeout)
            .connect_timeout(upstream.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(8)
            .build()
            .map_err(|error| UpstreamError::Client(error.to_string()))?;
        let backoff = Backoff { base: upstream.retry_base, max: upstream.retry_max };
        let secrets: HashMap<CorpId, crate::config::Secret> =
            config.corps.iter().filter_map(|corp| Some((corp.corp_id.clone(), corp.secret.clone()?))).collect();
        let tokens = Arc::new(TokenCache::new(secrets, upstream.token_refresh_margin));
        Ok(UpstreamClient {
            http,
            base_url: upstream.base_url.clone().into(),
            max_retries: upstream.max_retries,
            backoff,
            tokens,
            metrics,
            pass_through_deadline: config.server.request_timeout.mul_f64(0.8),
        })
    }

    /// An application's pass-through call: at most once in effect, within the deadline.
    pub async fn invoke_once<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        corp_id: &str,
        api: &str,
        body: &B,
    ) -> Result<T, UpstreamError> {
        tokio::time::timeout(self.pass_through_deadline, self.call(corp_id, api, body, Repeat::Once))
            .await
            .unwrap_or(Err(UpstreamError::Deadline))
    }

    /// `POST /cgi-bin/chatdata/{api}?access_token=…` with `body`; the answer when errcode is 0.
    /// Every retryable failure is retried: for calls that may safely run twice.
    pub async fn invoke<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        corp_id: &str,
        api: &str,
        body: &B,
    ) -> Result<T, UpstreamError> {
        self.call(corp_id, api, body, Repeat::Safe).await
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        corp_id: &str,
        api: &str,
        body: &B,
        repeat: Repeat,
    ) -> Result<T, UpstreamError> {
        let payload = serde_json::to_vec(body).map_err(|error| UpstreamError::Client(error.to_string()))?;
        let url = format!("{}/cgi-bin/chatdata/{api}", self.base_url);
        let mut refreshed = false;
        let mut retries = 0;
        loop {
            let token = self.token(corp_id).await?;
            let cause = match self.post(&url, &token, &payload).await {
                Ok(bytes) => match parse_answer::<T>(&bytes) {
                    Answer::Ok(value) => return Ok(value),
                    Answer::TokenRejected { .. } if !refreshed => {
                        refreshed = true;
                        self.tokens.invalidate(corp_id, &token).await;
                        continue;
                    }
                    Answer::TokenRejected { errcode, errmsg } | Answer::Failed { errcode, errmsg } => {
                        return Err(UpstreamError::Api { errcode, errmsg });
                    }
                    // WeCom answered, and said it did not do it.
                    Answer::Retry(cause @ (RetryCause::Busy | RetryCause::RateLimit)) => cause,
                    Answer::Retry(cause) if repeat == Repeat::Once => return Err(UpstreamError::Uncertain(cause)),
                    Answer::Retry(cause) => cause,
                },
                Err(Failure::NotSent(cause)) => cause,
                Err(Failure::Retry(cause)) if repeat == Repeat::Once => return Err(UpstreamError::Uncertain(cause)),
                Err(Failure::Retry(cause)) => cause,
                Err(Failure::Status(status)) => return Err(UpstreamError::Status(status)),
                Err(Failure::TooLarge) => return Err(UpstreamError::AnswerTooLarge),
            };
            self.back_off(&mut retries, cause).await?;
        }
    }

    /// Sleeps before the next attempt, or gives up when the retries are spent.
    async fn back_off(&self, retries: &mut u32, cause: RetryCause) -> Result<(), UpstreamError> {
        if *retries >= self.max_retries {
            return Err(UpstreamError::Exhausted { attempts: *retries + 1, last: cause });
        }
        self.metrics.upstream_retry(cause.label());
        tokio::time::sleep(self.backoff.delay(*retries)).await;
        *retries += 1;
        Ok(())
    }

    /// The cached token, fetched (once, for all waiters) when absent or about to expire.
    async fn token(&self, corp_id: &str) -> Result<String, UpstreamError> {
        self.tokens.get(corp_id, |secret| self.fetch_token(corp_id, secret)).await
    }

    /// `GET /cgi-bin/gettoken`, retried like any call. Returns (token, expires_in seconds).
    async fn fetch_token(&self, corp_id: &str, secret: String) -> Result<(String, u64), UpstreamError> {
        let url = format!("{}/cgi-bin/gettoken", self.base_url);
        let mut retries = 0;
        loop {
            let request = self.http.get(&url).query(&[("corpid", corp_id), ("corpsecret", secret.as_str())]);
            let cause = match send(request).await {
                Ok(bytes) => match parse_answer::<TokenAnswer>(&bytes) {
                    Answer::Ok(answer) if !answer.access_token.is_empty() => {
                        self.metrics.token_refresh(corp_id);
                        return Ok((answer.access_token, answer.expires_in));
                    }
                    Answer::Ok(_) => RetryCause::BrokenBody,
                    Answer::Retry(cause) => cause,
                    Answer::TokenRejected { errcode, errmsg } | Answer::Failed { errcode, errmsg } => {
                        return Err(UpstreamError::Api { errcode, errmsg });
                    }
                },
                Err(Failure::Retry(cause) | Failure::NotSent(cause)) => cause,
                Err(Failure::Status(status)) => return Err(UpstreamError::Status(status)),
                Err(Failure::TooLarge) => return Err(UpstreamError::AnswerTooLarge),
            };
            self.back_off(&mut retries, cause).await?;
        }
    }

    async fn post(&self, url: &str, token: &str, payload: &[u8]) -> Result<bytes::Bytes, Failure> {
        let request = self
            .http
            .post(url)
            .query(&[("access_token", token)])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_vec());
        send(request).await
    }
}

enum Failure {
    /// Failed after the request may have been sent.
    Retry(RetryCause),
    /// The connection never opened: WeCom saw nothing.
    NotSent(RetryCause),
    Status(u16),
    TooLarge,
}

async fn send(request: reqwest::RequestBuilder) -> Result<bytes::Bytes, Failure> {
    let mut response = request.send().await.map_err(|error| {
        if error.is_connect() { Failure::NotSent(RetryCause::Network) } else { Failure::Retry(transport_cause(&error)) }
    })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Failure::Retry(RetryCause::ServerError));
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if response.content_length().is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
        return Err(Failure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| Failure::Retry(transport_cause(&error)))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn transport_cause(error: &reqwest::Error) -> RetryCause {
    if error.is_timeout() {
        RetryCause::Timeout
    } else if error.is_body() || error.is_decode() {
        RetryCause::BrokenBody
    } else {
        RetryCause::Network
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

pub(crate) enum Answer<T> {
    Ok(T),
    TokenRejected { errcode: i64, errmsg: String },
    Retry(RetryCause),
    Failed { errcode: i64, errmsg: String },
}

pub(crate) fn parse_answer<T: DeserializeOwned>(bytes: &[u8]) -> Answer<T> {
    let Ok(header) = serde_json::from_slice::<ErrorHeader>(bytes) else {
        return Answer::Retry(RetryCause::BrokenBody);
    };
    match header.errcode {
        0 => match serde_json::from_slice::<T>(bytes) {
            Ok(value) => Answer::Ok(value),
            Err(_) => Answer::Retry(RetryCause::BrokenBody),
        },
        errcode if TOKEN_ERRCODES.contains(&errcode) => Answer::TokenRejected { errcode, errmsg: header.errmsg },
        errcode if RETRY_ERRCODES.contains(&errcode) => Answer::Retry(RetryCause::from_errcode(errcode)),
        errcode => Answer::Failed { errcode, errmsg: header.errmsg },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_errcode() {
        assert!(matches!(parse_answer::<serde_json::Value>(br#"{"errcode":0,"a":1}"#), Answer::Ok(_)));
        assert!(matches!(parse_answer::<serde_json::Value>(br#"{"a":1}"#), Answer::Ok(_)), "no errcode is 0");
        assert!(matches!(
            parse_answer::<serde_json::Value>(br#"{"errcode":42001,"errmsg":"expired"}"#),
            Answer::TokenRejected { errcode: 42001, .. }
        ));
        for (body, cause) in [
            (&br#"{"errcode":-1}"#[..], RetryCause::Busy),
            (br#"{"errcode":45009}"#, RetryCause::RateLimit),
            (br#"{"errcode":45033}"#, RetryCause::RateLimit),
            (br#"{"errcode":0,"has_more"#, RetryCause::BrokenBody),
            (b"", RetryCause::BrokenBody),
        ] {
            assert!(matches!(parse_answer::<serde_json::Value>(body), Answer::Retry(c) if c == cause));
        }
        assert!(matches!(
            parse_answer::<serde_json::Value>(br#"{"errcode":710611,"errmsg":"bad cursor"}"#),
            Answer::Failed { errcode: 710611, .. }
        ));
    }
}
