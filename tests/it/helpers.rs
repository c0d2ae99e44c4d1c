//! `spawn_app()` starts the real server on port 0 with a recording dispatcher and returns a
//! `TestApp` whose helpers build correctly signed and encrypted requests, so tests never
//! assemble URLs or ciphertexts by hand.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wecom_zone::app::AppState;
use wecom_zone::config::Config;
use wecom_zone::crypto::{SealedReply, WxBizMsgCrypt};
use wecom_zone::domain::{
    AbilityCall, BoxFuture, DeliveryKey, DispatchError, Dispatcher, Event, unix_now, unknown_ability,
};

pub const CORP_ID: &str = "ww1436e0e65a779aee";
pub const OTHER_CORP_ID: &str = "wwsecondcorp000001";
pub const TOKEN: &str = "orcBqyt1T5AlQzhk7Q2b";
pub const AES_KEY: &str = "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ";
pub const OTHER_TOKEN: &str = "S3condT0ken7x";
pub const OTHER_AES_KEY: &str = "qg0eyN1ygQdvpSfF5PH5nLZjMeI8cFSmj83LDUL4CsJ";
pub const BODY_LIMIT: usize = 4096;

/// What the dispatcher saw, in order.
#[derive(Default)]
pub struct Recorded {
    pub events: Vec<String>,
    pub sync_calls: Vec<String>,
    pub async_calls: Vec<String>,
}

#[derive(Default)]
pub struct RecordingDispatcher {
    pub recorded: Mutex<Recorded>,
    /// When set, accepting events fails (to test that a failure is retried, not swallowed).
    pub fail_events: Mutex<bool>,
    /// How long accepting an event takes (storage under load).
    pub event_delay: Mutex<std::time::Duration>,
}

impl Dispatcher for RecordingDispatcher {
    fn accept_event(&self, event: Event, _delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let delay = *self.event_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if *self.fail_events.lock().unwrap() {
                return Err(DispatchError("storage unavailable".into()));
            }
            let label = match event {
                Event::Classic { event, .. } => format!("classic:{}", event.event.unwrap_or_default()),
                Event::Zone(event) => format!("zone:{}", event.event_type),
            };
            self.recorded.lock().unwrap().events.push(label);
            Ok(())
        })
    }

    fn call_ability(&self, call: AbilityCall) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            self.recorded.lock().unwrap().sync_calls.push(call.ability_id.clone());
            if call.ability_id == "echo" {
                json!({"echo": call.request_data, "notify_id": call.notify_id})
            } else {
                unknown_ability(&call.ability_id)
            }
        })
    }

    fn accept_async_call(&self, call: AbilityCall, _delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            self.recorded.lock().unwrap().async_calls.push(call.job_info);
            Ok(())
        })
    }
}

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub crypto: WxBizMsgCrypt,
    pub dispatcher: Arc<RecordingDispatcher>,
    _shutdown: oneshot::Sender<()>,
}

pub fn test_config(max_clock_skew_s: u64) -> Config {
    test_config_with(&format!("max_clock_skew_s = {max_clock_skew_s}"))
}

/// The two-corp test config with `server` lines added to `[server]`.
pub fn test_config_with(server: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
body_limit_bytes = {BODY_LIMIT}
{server}

[[corp]]
corp_id = "{CORP_ID}"
secret = "first-app-secret"
token = "{TOKEN}"
encoding_aes_key = "{AES_KEY}"
private_keys = [ {{ version = 1, path = "tests/data/test_private_key_v1.pem" }} ]

[[corp]]
corp_id = "{OTHER_CORP_ID}"
secret = "second-app-secret"
token = "{OTHER_TOKEN}"
encoding_aes_key = "{OTHER_AES_KEY}"
private_keys = [ {{ version = 1, path = "tests/data/test_private_key_v1.pem" }} ]
"#
    );
    Config::from_toml_str(&text, Vec::new(), None).unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config(300)).await
}

pub async fn spawn_app_with(config: Config) -> TestApp {
    let dispatcher = Arc::new(RecordingDispatcher::default());
    let state = AppState::new(config, dispatcher.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(wecom_zone::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base_url: format!("http://{address}"),
        client: reqwest::Client::new(),
        crypto: WxBizMsgCrypt::new(TOKEN, AES_KEY).unwrap(),
        dispatcher,
        _shutdown: shutdown,
    }
}

/// A signed callback: query string and ciphertext.
pub struct Signed {
    pub query: String,
    pub encrypt: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Encrypts `msg` for `receive_id` and signs it with our Token at `timestamp`.
    pub fn sign(&self, msg: &str, receive_id: &str, timestamp: i64) -> Signed {
        let encrypt = self.crypto.encrypt(rand::random(), msg.as_bytes(), receive_id.as_bytes());
        let timestamp = timestamp.to_string();
        let nonce = rand::random::<u32>().to_string();
        let signature = self.crypto.signature(&timestamp, &nonce, &encrypt);
        Signed { query: format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}"), encrypt }
    }

    pub fn signed_now(&self, msg: &str) -> Signed {
        self.sign(msg, CORP_ID, unix_now())
    }

    pub async fn post(&self, path: &str, query: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client.post(format!("{}?{query}", self.url(path))).body(body).send().await.unwrap()
    }

    pub async fn post_xml(&self, path: &str, signed: &Signed, to_user_name: &str) -> reqwest::Response {
        self.post(path, &signed.query, xml_envelope(to_user_name, &signed.encrypt)).await
    }

    pub async fn post_json(&self, path: &str, signed: &Signed, to_user_name: &str) -> reqwest::Response {
        let body = json!({"tousername": to_user_name, "encrypt": signed.encrypt, "agentid": 1000002});
        self.post(path, &signed.query, body.to_string()).await
    }

    /// Decrypts an encrypted reply after checking its signature.
    pub fn open_reply(&self, body: &str) -> Value {
        let reply = SealedReply::parse(body.as_bytes()).unwrap();
        let msg = self
            .crypto
            .open(&reply.msg_signature, &reply.timestamp, &reply.nonce, &reply.encrypt, |id| id == CORP_ID.as_bytes())
            .unwrap();
        serde_json::from_slice(&msg).unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

pub fn xml_envelope(to_user_name: &str, encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to_user_name}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID>\n\
         <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

pub fn zone_event(event_type: &str, payload: Value) -> String {
    let data = json!({"event_type": event_type, "timestamp": unix_now(), event_type: payload});
    json!({"call_type": 2, "corpid": CORP_ID, "agentid": 1000002, "data": data.to_string()}).to_string()
}

pub fn ability_call(ability_id: &str, request_data: &str, is_async: bool) -> String {
    json!({
        "call_type": 1, "corpid": CORP_ID, "agentid": 1000002, "ability_id": ability_id,
        "notify_id": "nid-1", "job_info": "job-42", "is_async": is_async, "data": request_data,
    })
    .to_string()
}

pub const MSGAUDIT_NOTIFY: &str = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\
    <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
    <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[msgaudit_notify]]></Event>\
    <AgentID>2000004</AgentID></xml>";

pub async fn error_of(response: reqwest::Response) -> (u16, i64, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["errcode"].as_i64().unwrap(), body["errmsg"].as_str().unwrap().to_owned())
}
