//! `sync_msg` request and answer, with the message fields of the reference (§6.1).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Serialize)]
pub struct SyncMsgRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    pub limit: u32,
}

/// The answer; each message is kept as raw JSON so it can be stored exactly as received.
#[derive(Debug, Deserialize)]
pub struct SyncMsgResponse {
    #[serde(default, deserialize_with = "bool_or_int")]
    pub has_more: bool,
    #[serde(default)]
    pub next_cursor: String,
    #[serde(default)]
    pub msg_list: Vec<Box<RawValue>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Party {
    #[serde(rename = "type", default)]
    pub kind: i64,
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EncryptInfo {
    #[serde(default)]
    pub encrypted_secret_key: String,
    pub public_key_ver: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct ExtraInfo {
    pub call_duration: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SyncMsgItem {
    pub msgid: String,
    #[serde(default = "unknown_party")]
    pub sender: Party,
    #[serde(default)]
    pub receiver_list: Vec<Party>,
    #[serde(default)]
    pub chatid: Option<String>,
    #[serde(default)]
    pub send_time: i64,
    #[serde(default)]
    pub msgtype: i64,
    pub service_encrypt_info: Option<EncryptInfo>,
    #[serde(default)]
    pub extra_info: Option<ExtraInfo>,
}

fn unknown_party() -> Party {
    Party { kind: 0, id: String::new() }
}

fn bool_or_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match Flag::deserialize(deserializer)? {
        Flag::Bool(flag) => flag,
        Flag::Int(value) => value != 0,
    })
}
