//! A client that speaks to a running service the way WeCom does: it encrypts and signs a plaintext
//! with the corp's callback Token and EncodingAESKey, POSTs it, and opens the encrypted answer.
//! Used by `wecom-zone call`, `demo` and the simulator.

use std::time::Duration;

use serde_json::{Value, json};

use crate::crypto::{CryptoError, EnvelopeFormat, SealedReply, WxBizMsgCrypt};
use crate::domain::unix_now;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("cannot reach the service: {0}")]
    Http(String),
    #[error("the answer could not be opened: {0}")]
    Answer(String),
}

/// What the service answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An encrypted answer, opened (signature and ReceiveId checked).
    Sealed(Value),
    /// A plain-text answer (`success`, or a decrypted echostr).
    Text(String),
    /// A refusal: the HTTP status and its `{errcode, errmsg}` body.
    Refused { status: u16, body: String },
}

pub struct ZoneClient {
    http: reqwest::Client,
    url: String,
    corp_id: String,
    crypto: WxBizMsgCrypt,
}

impl ZoneClient {
    /// `url` is the service's callback URL, e.g. `http://127.0.0.1:8080/`.
    pub fn new(url: &str, corp_id: &str, token: &str, encoding_aes_key: &str) -> Result<ZoneClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| ClientError::Http(error.to_string()))?;
        Ok(ZoneClient {
            http,
            url: url.to_owned(),
            corp_id: corp_id.to_owned(),
            crypto: WxBizMsgCrypt::new(token, encoding_aes_key)?,
        })
    }

    pub fn corp_id(&self) -> &str {
        &self.corp_id
    }

    /// Sends `plaintext` in an XML or JSON envelope and returns the answer.
    pub async fn send(&self, plaintext: &str, format: EnvelopeFormat) -> Result<Answer, ClientError> {
        let timestamp = unix_now().to_string();
        let nonce = rand::random::<u32>().to_string();
        let sealed =
            self.crypto.seal(rand::random(), plaintext.as_bytes(), self.corp_id.as_bytes(), &timestamp, &nonce);
        let body = match format {
            EnvelopeFormat::Json => {
                json!({"tousername": self.corp_id, "encrypt": sealed.encrypt, "agentid": 0}).to_string()
            }
            EnvelopeFormat::Xml => format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
                self.corp_id, sealed.encrypt
            ),
        };
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}msg_signature={}&timestamp={timestamp}&nonce={nonce}",
            self.url, sealed.msg_signature
        );
        let response =
            self.http.post(url).body(body).send().await.map_err(|error| ClientError::Http(error.to_string()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|error| ClientError::Http(error.to_string()))?;
        if status != 200 {
            return Ok(Answer::Refused { status, body: text });
        }
        if !text.trim_start().starts_with(['<', '{']) {
            return Ok(Answer::Text(text));
        }
        self.open(&text).map(Answer::Sealed)
    }

    /// Opens an encrypted answer of the service.
    pub fn open(&self, body: &str) -> Result<Value, ClientError> {
        let reply = SealedReply::parse(body.as_bytes())?;
        let msg = self.crypto.open(&reply.msg_signature, &reply.timestamp, &reply.nonce, &reply.encrypt, |id| {
            id == self.corp_id.as_bytes()
        })?;
        serde_json::from_slice(&msg).map_err(|_| ClientError::Answer("the decrypted answer is not JSON".into()))
    }

    /// Calls ability `ability_id` synchronously (or, with `job_info`, asynchronously).
    pub async fn call_ability(
        &self,
        ability_id: &str,
        request_data: &Value,
        notify_id: &str,
        job_info: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let plaintext = ability_call(&self.corp_id, ability_id, request_data, notify_id, job_info);
        self.send(&plaintext, EnvelopeFormat::Json).await
    }
}

/// The plaintext of an ability call (`call_type` 1) as WeCom forwards it.
pub fn ability_call(
    corp_id: &str,
    ability_id: &str,
    request_data: &Value,
    notify_id: &str,
    job_info: Option<&str>,
) -> String {
    json!({
        "call_type": 1,
        "corpid": corp_id,
        "agentid": 0,
        "ability_id": ability_id,
        "notify_id": notify_id,
        "job_info": job_info.unwrap_or_default(),
        "is_async": job_info.is_some(),
        "data": request_data.to_string(),
    })
    .to_string()
}

/// The plaintext of a zone event (`call_type` 2): `{event_type, timestamp, <event_type>: payload}`.
pub fn zone_event(corp_id: &str, event_type: &str, payload: &Value) -> String {
    let data = json!({"event_type": event_type, "timestamp": unix_now(), event_type: payload});
    json!({"call_type": 2, "corpid": corp_id, "agentid": 0, "data": data.to_string()}).to_string()
}

/// A classic XML event such as `msgaudit_notify`.
pub fn classic_event(corp_id: &str, event: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event></xml>",
        unix_now()
    )
}
