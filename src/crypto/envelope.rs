//! The outer envelopes: what WeCom POSTs (XML or JSON around `Encrypt`) and what we answer.
//!
//! Only `Encrypt` takes part in the crypto. `ToUserName` says which corp the sender meant and
//! `AgentID` which app; neither is trusted until the decrypted ReceiveId agrees.

use serde::{Deserialize, Serialize};

use super::error::{CryptoError, EnvelopeProblem};
use crate::xml;

/// Which wire format an envelope used; replies are written in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeFormat {
    Xml,
    Json,
}

/// A parsed POST body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub format: EnvelopeFormat,
    /// The addressed corp (or suite) id, when present and non-empty.
    pub to_user_name: Option<String>,
    /// The base64 ciphertext exactly as received.
    pub encrypt: String,
    /// The agent id as text (JSON senders use numbers or strings), when present.
    pub agent_id: Option<String>,
}

/// An encrypted, signed answer: the four values of a passive reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedReply {
    pub encrypt: String,
    #[serde(rename = "msgsignature")]
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
}

#[derive(Deserialize)]
struct JsonEnvelope {
    #[serde(default)]
    tousername: Option<String>,
    #[serde(default)]
    encrypt: Option<String>,
    #[serde(default)]
    agentid: Option<serde_json::Value>,
}

impl Envelope {
    /// Parses an XML or JSON envelope, recognised by its first non-blank byte.
    pub fn parse(body: &[u8]) -> Result<Envelope, CryptoError> {
        let problem = |p| CryptoError::ParseEnvelope(p);
        let text = std::str::from_utf8(body).map_err(|_| problem(EnvelopeProblem::NotUtf8))?;
        let text = text.trim_start_matches('\u{feff}').trim();
        match text.as_bytes().first() {
            None => Err(problem(EnvelopeProblem::Empty)),
            Some(b'<') => Self::parse_xml(text),
            Some(b'{') => Self::parse_json(text),
            Some(_) => Err(problem(EnvelopeProblem::NotXmlOrJson)),
        }
    }

    fn parse_xml(text: &str) -> Result<Envelope, CryptoError> {
        let fields =
            xml::top_level_fields(text).map_err(|_| CryptoError::ParseEnvelope(EnvelopeProblem::InvalidXml))?;
        let encrypt = xml::field(&fields, "Encrypt")
            .filter(|value| !value.is_empty())
            .ok_or(CryptoError::ParseEnvelope(EnvelopeProblem::MissingEncrypt))?;
        Ok(Envelope {
            format: EnvelopeFormat::Xml,
            to_user_name: non_empty(xml::field(&fields, "ToUserName")),
            encrypt: encrypt.to_owned(),
            agent_id: non_empty(xml::field(&fields, "AgentID")),
        })
    }

    fn parse_json(text: &str) -> Result<Envelope, CryptoError> {
        let parsed: JsonEnvelope =
            serde_json::from_str(text).map_err(|_| CryptoError::ParseEnvelope(EnvelopeProblem::InvalidJson))?;
        let encrypt = parsed
            .encrypt
            .filter(|value| !value.is_empty())
            .ok_or(CryptoError::ParseEnvelope(EnvelopeProblem::MissingEncrypt))?;
        let agent_id = match parsed.agentid {
            Some(serde_json::Value::String(text)) => Some(text),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        Ok(Envelope {
            format: EnvelopeFormat::Json,
            to_user_name: non_empty(parsed.tousername.as_deref()),
            encrypt,
            agent_id: non_empty(agent_id.as_deref()),
        })
    }
}

impl SealedReply {
    /// The reply body in `format`, with its media type.
    pub fn render(&self, format: EnvelopeFormat) -> (&'static str, String) {
        match format {
            EnvelopeFormat::Xml => ("application/xml", self.to_xml()),
            EnvelopeFormat::Json => ("application/json", self.to_json()),
        }
    }

    /// `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>` as the official libraries write it.
    /// The values are base64, hex and digits, which cannot close a CDATA section.
    pub fn to_xml(&self) -> String {
        format!(
            "<xml><Encrypt><![CDATA[{}]]></Encrypt><MsgSignature><![CDATA[{}]]></MsgSignature>\
             <TimeStamp>{}</TimeStamp><Nonce><![CDATA[{}]]></Nonce></xml>",
            self.encrypt, self.msg_signature, self.timestamp, self.nonce
        )
    }

    /// `{"encrypt","msgsignature","timestamp","nonce"}`, all strings.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a reply back (the simulator and the `call` client need this).
    pub fn parse(body: &[u8]) -> Result<SealedReply, CryptoError> {
        let envelope = Envelope::parse(body)?;
        let text = std::str::from_utf8(body).map_err(|_| CryptoError::ParseEnvelope(EnvelopeProblem::NotUtf8))?;
        let (msg_signature, timestamp, nonce) = match envelope.format {
            EnvelopeFormat::Xml => {
                let fields = xml::top_level_fields(text.trim())
                    .map_err(|_| CryptoError::ParseEnvelope(EnvelopeProblem::InvalidXml))?;
                let get = |name| xml::field(&fields, name).unwrap_or_default().to_owned();
                (get("MsgSignature"), get("TimeStamp"), get("Nonce"))
            }
            EnvelopeFormat::Json => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|_| CryptoError::ParseEnvelope(EnvelopeProblem::InvalidJson))?;
                let get = |name: &str| match &value[name] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                (get("msgsignature"), get("timestamp"), get("nonce"))
            }
        };
        Ok(SealedReply { encrypt: envelope.encrypt, msg_signature, timestamp, nonce })
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}
