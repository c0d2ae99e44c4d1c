//! A simulator of WeCom's side, on loopback, speaking the upstream of the contract:
//! `gettoken` (tokens that expire), `sync_msg` (opaque cursors over a generated corpus with
//! RSA-encrypted secret keys), `spec_notify_app`, `program_async_job_call_back` and pass-through
//! APIs; plus signed, encrypted callbacks to the service, and seeded fault injection.
//!
//! It lives in the library because `demo` and `bench` use it as well as the tests. Like `http`,
//! it knows axum: it is WeCom's HTTP surface, not ours.

pub mod archive;
mod corpus;
mod faults;
pub mod stub_sdk;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use corpus::{Corpus, SimMessage, SimParty, SplitMix};
pub use faults::{Fault, FaultInjector};

use crate::client::{ClientError, ZoneClient};
use crate::crypto::KeyError;
use crate::domain::unix_now;

/// WeCom's errcode for a cursor it did not issue.
const BAD_CURSOR: i64 = 710611;

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub corp_id: String,
    /// The app secret `gettoken` accepts.
    pub secret: String,
    /// The callback Token and EncodingAESKey used to sign and encrypt callbacks to the service.
    pub callback_token: String,
    pub encoding_aes_key: String,
    pub messages: usize,
    pub seed: u64,
    /// `(version, public key PEM)`, in rotation order over the corpus.
    pub keys: Vec<(u32, String)>,
    /// `expires_in` of issued tokens.
    pub token_lifetime: Duration,
    /// Probability that an upstream request fails (see [`Fault`]).
    pub fault_rate: f64,
    pub fault_seed: u64,
    pub max_fault_delay: Duration,
    /// Latency added to every `sync_msg` answer (a network between the service and WeCom).
    pub page_delay: Duration,
}

impl SimulatorConfig {
    /// Defaults for `corp_id` with the given corpus and keys.
    pub fn new(corp_id: &str, messages: usize, keys: Vec<(u32, String)>) -> SimulatorConfig {
        SimulatorConfig {
            corp_id: corp_id.to_owned(),
            secret: random_alphanumeric(43),
            callback_token: random_alphanumeric(32),
            encoding_aes_key: random_alphanumeric(43),
            messages,
            seed: 20_241_121,
            keys,
            token_lifetime: Duration::from_secs(7200),
            fault_rate: 0.0,
            fault_seed: 7,
            max_fault_delay: Duration::from_millis(200),
            page_delay: Duration::ZERO,
        }
    }
}

/// Fresh credentials for every simulated corp: nothing shared with a published sample.
pub fn random_alphanumeric(length: usize) -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..length).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("simulator keys: {0}")]
    Key(#[from] KeyError),
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of what the simulator saw and did.
#[derive(Debug, Default)]
pub struct SimStats {
    pub gettoken_calls: AtomicU64,
    pub sync_msg_calls: AtomicU64,
    pub faults_injected: AtomicU64,
    pub rejected_tokens: AtomicU64,
    /// Items handed out by `sync_msg` (re-served pages count again).
    pub items_served: AtomicU64,
}

/// A `spec_notify_app` or `program_async_job_call_back` call, or a pass-through API call.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub api: String,
    pub body: Value,
}

struct IssuedToken {
    token: String,
    expires_at: Instant,
}

struct SimState {
    config: SimulatorConfig,
    corpus: Corpus,
    /// How many messages `sync_msg` shows (the rest "arrive" later, see `publish`).
    visible: AtomicUsize,
    tokens: Mutex<Vec<IssuedToken>>,
    /// When set, the current tokens stop working after this many more chatdata calls.
    expire_after_calls: Mutex<Option<u64>>,
    faults: FaultInjector,
    stats: SimStats,
    calls: Mutex<Vec<RecordedCall>>,
    sync_tokens: Mutex<Vec<String>>,
    notify_counter: AtomicU64,
    /// APIs that answer errcode -1 (busy) until unblocked.
    failing_apis: Mutex<Vec<String>>,
    /// Requests refused for good (errcode 40058): the API and which of its requests.
    refusals: Mutex<Vec<(String, RequestFilter)>>,
    /// `spec_notify_app` answers errcode 0 without a `notify_id`.
    omit_notify_id: std::sync::atomic::AtomicBool,
    /// Answers served, in order, before an API's own: (HTTP status, body).
    scripted: Mutex<std::collections::HashMap<String, std::collections::VecDeque<ScriptedAnswer>>>,
    /// The `expires_in` gettoken announces, when set (the token itself lives `token_lifetime`).
    announced_expires_in: Mutex<Option<u64>>,
}

/// An HTTP status and body, served as they are.
pub type ScriptedAnswer = (u16, Vec<u8>);

/// Picks requests by their JSON body.
pub type RequestFilter = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// A running simulator; stops when dropped.
pub struct Simulator {
    state: Arc<SimState>,
    base_url: String,
    _stop: oneshot::Sender<()>,
}

impl Simulator {
    /// Generates and encrypts the corpus, then serves on `127.0.0.1:0`.
    pub async fn start(config: SimulatorConfig) -> Result<Simulator, SimulatorError> {
        let generation_config = config.clone();
        // Generation encrypts every secret key (RSA): a thread of its own, off the runtime.
        let (generated, corpus) = oneshot::channel();
        std::thread::Builder::new().name("sim-corpus".into()).spawn(move || {
            let start_time = unix_now() - 4 * 86_400 - 600;
            let _ = generated.send(Corpus::generate(
                generation_config.seed,
                generation_config.messages,
                start_time,
                &generation_config.keys,
            ));
        })?;
        let corpus = corpus.await.map_err(std::io::Error::other)??;
        let state = Arc::new(SimState {
            visible: AtomicUsize::new(config.messages),
            faults: FaultInjector::new(config.fault_rate, config.fault_seed, config.max_fault_delay),
            config,
            corpus,
            tokens: Mutex::new(Vec::new()),
            expire_after_calls: Mutex::new(None),
            stats: SimStats::default(),
            calls: Mutex::new(Vec::new()),
            sync_tokens: Mutex::new(Vec::new()),
            notify_counter: AtomicU64::new(0),
            failing_apis: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
            omit_notify_id: std::sync::atomic::AtomicBool::new(false),
            scripted: Mutex::new(std::collections::HashMap::new()),
            announced_expires_in: Mutex::new(None),
        });
        let router = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/chatdata/{api}", post(chatdata))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Simulator { state, base_url, _stop: stop })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.state.config
    }

    pub fn corpus(&self) -> &Corpus {
        &self.state.corpus
    }

    pub fn stats(&self) -> &SimStats {
        &self.state.stats
    }

    /// What the service should store for message `index`.
    pub fn expected(&self, index: usize) -> SimMessage {
        self.state.corpus.message(index)
    }

    /// Shows only the first `count` messages to `sync_msg` (more "arrive" with a later call).
    pub fn publish(&self, count: usize) {
        self.state.visible.store(count.min(self.state.corpus.len()), Ordering::SeqCst);
    }

    /// Makes every issued token invalid after `calls` more chatdata calls (early expiry).
    pub fn expire_tokens_after(&self, calls: u64) {
        *lock(&self.state.expire_after_calls) = Some(calls);
    }

    /// Makes `api` answer errcode -1 (system busy) while `failing` is true.
    pub fn set_api_failing(&self, api: &str, failing: bool) {
        let mut apis = lock(&self.state.failing_apis);
        apis.retain(|name| name != api);
        if failing {
            apis.push(api.to_owned());
        }
    }

    /// Makes `api` refuse every request `which` picks with errcode 40058, a permanent error.
    /// Refused requests are recorded as calls to `"{api} (refused)"`.
    pub fn refuse(&self, api: &str, which: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        lock(&self.state.refusals).push((api.to_owned(), Arc::new(which)));
    }

    /// Queues answers that the chatdata `api` gives (after the token check) before its own, each
    /// recorded as a call to `api`: to play a misbehaving WeCom.
    pub fn script(&self, api: &str, answers: Vec<ScriptedAnswer>) {
        lock(&self.state.scripted).entry(api.to_owned()).or_default().extend(answers);
    }

    /// Makes gettoken announce `expires_in` (the token still lives `token_lifetime`).
    pub fn announce_expires_in(&self, expires_in: u64) {
        *lock(&self.state.announced_expires_in) = Some(expires_in);
    }

    /// Makes `spec_notify_app` answer errcode 0 without echoing the `notify_id`.
    pub fn set_omit_notify_id(&self, omit: bool) {
        self.state.omit_notify_id.store(omit, Ordering::SeqCst);
    }

    pub fn set_fault_rate(&self, rate: f64) {
        self.state.faults.set_rate(rate);
    }

    /// Calls to `spec_notify_app`, `program_async_job_call_back` and pass-through APIs, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state.calls).clone()
    }

    /// The `token` values `sync_msg` received.
    pub fn sync_tokens(&self) -> Vec<String> {
        lock(&self.state.sync_tokens).clone()
    }

    /// A zone `conversation_new_message` event (the plaintext of a `call_type` 2 request).
    pub fn new_message_event(&self) -> (String, String) {
        let token = format!("evt{:x}", rand::random::<u64>());
        let payload = json!({"token": token});
        (crate::client::zone_event(&self.state.config.corp_id, "conversation_new_message", &payload), token)
    }

    /// The `[[corp]]` block of a service that talks to this simulator: its corp id, app secret,
    /// callback Token and EncodingAESKey, and `private_keys` (TOML inline tables, e.g.
    /// `{ version = 1, path = "…" }`).
    pub fn corp_toml(&self, private_keys: &[String]) -> String {
        let config = &self.state.config;
        format!(
            "[[corp]]\ncorp_id = \"{}\"\nsecret = \"{}\"\ntoken = \"{}\"\nencoding_aes_key = \"{}\"\nprivate_keys = [ {} ]\n",
            config.corp_id,
            config.secret,
            config.callback_token,
            config.encoding_aes_key,
            private_keys.join(", ")
        )
    }

    /// A client that sends callbacks to the service at `service_url` as this simulated WeCom.
    pub fn client_for(&self, service_url: &str) -> Result<ZoneClient, ClientError> {
        let config = &self.state.config;
        ZoneClient::new(
            &format!("{}/", service_url.trim_end_matches('/')),
            &config.corp_id,
            &config.callback_token,
            &config.encoding_aes_key,
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn errcode(errcode: i64, errmsg: &str) -> Response {
    axum::Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    corpid: String,
    #[serde(default)]
    corpsecret: String,
}

async fn gettoken(State(state): State<Arc<SimState>>, Query(query): Query<TokenQuery>) -> Response {
    let truncate = match inject_fault(&state).await {
        Err(refusal) => return refusal,
        Ok(truncate) => truncate,
    };
    if query.corpid != state.config.corp_id {
        return errcode(40013, "invalid corpid");
    }
    if query.corpsecret != state.config.secret {
        return errcode(40001, "invalid credential");
    }
    state.stats.gettoken_calls.fetch_add(1, Ordering::SeqCst);
    let token = format!("simtok{:016x}", rand::random::<u64>());
    let lifetime = state.config.token_lifetime;
    lock(&state.tokens).push(IssuedToken { token: token.clone(), expires_at: Instant::now() + lifetime });
    let expires_in = lock(&state.announced_expires_in).unwrap_or(lifetime.as_secs());
    let answer = json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in});
    json_answer(answer.to_string().into_bytes(), truncate)
}

#[derive(Deserialize)]
struct TokenParam {
    #[serde(default)]
    access_token: String,
}

async fn chatdata(
    State(state): State<Arc<SimState>>,
    Path(api): Path<String>,
    Query(query): Query<TokenParam>,
    body: Bytes,
) -> Response {
    if let Err((code, message)) = check_token(&state, &query.access_token) {
        return errcode(code, message);
    }
    let scripted = lock(&state.scripted).get_mut(&api).and_then(std::collections::VecDeque::pop_front);
    if let Some((status, answer)) = scripted {
        let request = serde_json::from_slice(&body).unwrap_or(Value::Null);
        lock(&state.calls).push(RecordedCall { api: api.clone(), body: request });
        let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
        return (status, [(axum::http::header::CONTENT_TYPE, "application/json")], answer).into_response();
    }
    if lock(&state.failing_apis).contains(&api) {
        return errcode(-1, "system busy");
    }
    let truncate = match inject_fault(&state).await {
        Err(refusal) => return refusal,
        Ok(truncate) => truncate,
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let refused = lock(&state.refusals).iter().any(|(refused_api, which)| *refused_api == api && which(&request));
    if refused {
        lock(&state.calls).push(RecordedCall { api: format!("{api} (refused)"), body: request });
        return errcode(40058, "invalid parameter");
    }
    if api == "sync_msg" && !state.config.page_delay.is_zero() {
        tokio::time::sleep(state.config.page_delay).await;
    }
    let answer = match api.as_str() {
        "sync_msg" => sync_msg(&state, &request),
        "spec_notify_app" => spec_notify_app(&state, &request),
        "get_group_chat" => get_group_chat(&state, &request),
        _ => {
            lock(&state.calls).push(RecordedCall { api: api.clone(), body: request });
            json!({"errcode": 0, "errmsg": "ok"}).to_string().into_bytes()
        }
    };
    json_answer(answer, truncate)
}

/// Draws the next fault: `Err` is the refusal to answer with, `Ok(true)` asks for the body to be
/// truncated, and a delay has already been slept when this returns.
async fn inject_fault(state: &SimState) -> Result<bool, Response> {
    let Some(fault) = state.faults.next() else { return Ok(false) };
    state.stats.faults_injected.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::Busy => Err(errcode(-1, "system busy")),
        Fault::RateLimit => Err(errcode(45009, "api freq out of limit")),
        Fault::Concurrency => Err(errcode(45033, "api concurrent out of limit")),
        Fault::ServerError => Err((StatusCode::INTERNAL_SERVER_ERROR, "<html>502 Bad Gateway</html>").into_response()),
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Ok(false)
        }
        Fault::Truncated => Ok(true),
    }
}

/// A JSON body, cut in half when a truncation fault asks for it.
fn json_answer(mut body: Vec<u8>, truncate: bool) -> Response {
    if truncate {
        body.truncate(body.len() / 2);
    }
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// 41001 without a token, 42001 for an expired one, 40014 for one never issued.
fn check_token(state: &SimState, token: &str) -> Result<(), (i64, &'static str)> {
    if token.is_empty() {
        return Err((41001, "access_token missing"));
    }
    let mut expire_after = lock(&state.expire_after_calls);
    let mut tokens = lock(&state.tokens);
    if let Some(remaining) = expire_after.as_mut() {
        if *remaining == 0 {
            for issued in tokens.iter_mut() {
                issued.expires_at = Instant::now();
            }
            *expire_after = None;
        } else {
            *remaining -= 1;
        }
    }
    match tokens.iter().find(|issued| issued.token == token) {
        Some(issued) if Instant::now() < issued.expires_at => Ok(()),
        Some(_) => {
            state.stats.rejected_tokens.fetch_add(1, Ordering::SeqCst);
            Err((42001, "access_token expired"))
        }
        None => {
            state.stats.rejected_tokens.fetch_add(1, Ordering::SeqCst);
            Err((40014, "invalid access_token"))
        }
    }
}

/// Cursors are opaque to the service: a tagged, seed-masked index.
fn encode_cursor(seed: u64, index: usize) -> String {
    format!("sim1{:016x}", (index as u64) ^ seed)
}

fn decode_cursor(seed: u64, cursor: &str) -> Option<usize> {
    let hex = cursor.strip_prefix("sim1")?;
    let masked = u64::from_str_radix(hex, 16).ok()?;
    usize::try_from(masked ^ seed).ok()
}

fn sync_msg(state: &SimState, request: &Value) -> Vec<u8> {
    state.stats.sync_msg_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(token) = request.get("token").and_then(Value::as_str) {
        let mut tokens = lock(&state.sync_tokens);
        if tokens.last().map(String::as_str) != Some(token) {
            tokens.push(token.to_owned());
        }
    }
    let limit = request.get("limit").and_then(Value::as_u64).unwrap_or(200).clamp(1, 1000) as usize;
    let visible = state.visible.load(Ordering::SeqCst);
    let start = match request.get("cursor").and_then(Value::as_str).filter(|cursor| !cursor.is_empty()) {
        None => 0,
        Some(cursor) => match decode_cursor(state.config.seed, cursor).filter(|index| *index <= state.corpus.len()) {
            Some(index) => index,
            None => return json!({"errcode": BAD_CURSOR, "errmsg": "invalid cursor"}).to_string().into_bytes(),
        },
    };
    let end = (start + limit).min(visible).max(start);
    let mut out = Vec::with_capacity((end - start) * 700 + 128);
    out.extend_from_slice(br#"{"errcode":0,"errmsg":"ok","has_more":"#);
    out.extend_from_slice(if end < visible { b"1" } else { b"0" });
    out.extend_from_slice(
        format!(r#","next_cursor":"{}","msg_list":["#, encode_cursor(state.config.seed, end)).as_bytes(),
    );
    for index in start..end {
        if index > start {
            out.push(b',');
        }
        if state.corpus.write_item(index, &mut out).is_err() {
            return json!({"errcode": -1, "errmsg": "system busy"}).to_string().into_bytes();
        }
    }
    out.extend_from_slice(b"]}");
    state.stats.items_served.fetch_add((end - start) as u64, Ordering::SeqCst);
    out
}

fn spec_notify_app(state: &SimState, request: &Value) -> Vec<u8> {
    let notify_id = match request.get("notify_id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!("nid{:08}{:x}", state.notify_counter.fetch_add(1, Ordering::SeqCst), rand::random::<u32>()),
    };
    let mut recorded = request.clone();
    recorded["notify_id"] = Value::String(notify_id.clone());
    lock(&state.calls).push(RecordedCall { api: "spec_notify_app".into(), body: recorded });
    if state.omit_notify_id.load(Ordering::SeqCst) {
        return json!({"errcode": 0, "errmsg": "ok"}).to_string().into_bytes();
    }
    json!({"errcode": 0, "errmsg": "ok", "notify_id": notify_id}).to_string().into_bytes()
}

fn get_group_chat(state: &SimState, request: &Value) -> Vec<u8> {
    let chatid = request.get("chatid").and_then(Value::as_str).unwrap_or_default();
    lock(&state.calls).push(RecordedCall { api: "get_group_chat".into(), body: request.clone() });
    match state.corpus.group_members(chatid) {
        Some(members) => {
            let members: Vec<Value> = members
                .iter()
                .map(|party| json!({"memberid": party.id, "type": party.kind, "jointime": unix_now() - 30 * 86_400}))
                .collect();
            json!({"errcode": 0, "errmsg": "ok", "creator": members.first().map(|m| m["memberid"].clone()),
                   "room_create_time": unix_now() - 60 * 86_400, "members": members})
            .to_string()
            .into_bytes()
        }
        None => json!({"errcode": 710624, "errmsg": "invalid chatid"}).to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_strangers() {
        assert_eq!(decode_cursor(42, &encode_cursor(42, 1234)), Some(1234));
        assert_eq!(decode_cursor(42, "nonsense"), None);
        assert_eq!(decode_cursor(42, "sim1zz"), None);
    }
}
