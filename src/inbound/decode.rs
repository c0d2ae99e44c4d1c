//! What is inside a decrypted callback: a classic XML event or a zone request (JSON), decoded
//! into the domain's typed values. Unknown events are kept raw rather than rejected, because WeCom
//! adds event types over time and a zone program that refuses them loses data.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{AbilityCall, ClassicEvent, ClassicEventKind, KnowledgeBaseChange, ZoneEvent, ZoneEventKind};
use crate::xml;

/// A decoded, authenticated callback.
pub enum Inbound {
    /// A classic `<xml>` event (msgaudit_notify, program_notify, change_external_contact, …).
    Classic(ClassicEvent),
    /// A zone event (`call_type` 2).
    ZoneEvent(ZoneEvent),
    /// An application's ability call (`call_type` 1).
    Ability(AbilityCall),
}

/// Why a decrypted plaintext could not be decoded. Never carries the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("decrypted message is neither XML nor JSON")]
    UnknownFormat,
    #[error("decrypted XML is malformed")]
    InvalidXml,
    #[error("decrypted JSON is not a zone request: {0}")]
    InvalidZoneRequest(String),
    #[error("unsupported call_type")]
    UnsupportedCallType(i64),
    #[error("zone event data is not a JSON object with event_type")]
    InvalidEventData,
}

/// A classic XML event. `fields` keeps every top-level element, so nothing WeCom sent is lost;
/// it may contain message content and must not be logged.
impl Inbound {
    /// A short label for logs and metrics, from a bounded set: never content, never caller input.
    pub fn label(&self) -> &'static str {
        match self {
            Inbound::Classic(event) => event.event_kind().label(),
            Inbound::ZoneEvent(event) => event.event_kind().label(),
            Inbound::Ability(call) => call.ability().label(),
        }
    }
}

/// Decodes an authenticated plaintext.
pub fn decode(plaintext: &[u8]) -> Result<Inbound, DecodeError> {
    let text = std::str::from_utf8(plaintext).map_err(|_| DecodeError::UnknownFormat)?;
    let text = text.trim_start_matches('\u{feff}').trim();
    match text.as_bytes().first() {
        Some(b'<') => decode_classic(text).map(Inbound::Classic),
        Some(b'{') => decode_zone_request(text),
        _ => Err(DecodeError::UnknownFormat),
    }
}

fn decode_classic(text: &str) -> Result<ClassicEvent, DecodeError> {
    let fields = xml::top_level_fields(text).map_err(|_| DecodeError::InvalidXml)?;
    let get = |name: &str| xml::field(&fields, name).map(str::trim).unwrap_or_default().to_owned();
    let event = Some(get("Event")).filter(|name| !name.is_empty());
    let kind = match event.as_deref() {
        Some("msgaudit_notify") => {
            ClassicEventKind::MsgauditNotify { agent_id: Some(get("AgentID")).filter(|id| !id.is_empty()) }
        }
        Some("program_notify") => ClassicEventKind::ProgramNotify {
            notify_id: get("NotifyId"),
            notify_scene: get("NotifyScene").parse().ok(),
        },
        Some("change_external_contact") => ClassicEventKind::ChangeExternalContact {
            change_type: get("ChangeType"),
            user_id: get("UserID"),
            external_user_id: get("ExternalUserID"),
        },
        Some("change_contact") => {
            ClassicEventKind::ChangeContact { change_type: get("ChangeType"), user_id: get("UserID") }
        }
        _ => ClassicEventKind::Other,
    };
    Ok(ClassicEvent {
        to_user_name: get("ToUserName"),
        create_time: get("CreateTime").parse().ok(),
        msg_type: get("MsgType"),
        event,
        kind,
        fields,
    })
}

#[derive(Deserialize)]
struct RawZoneRequest {
    call_type: Value,
    #[serde(default)]
    corpid: String,
    #[serde(default)]
    agentid: Value,
    #[serde(default)]
    ability_id: String,
    #[serde(default)]
    notify_id: String,
    #[serde(default)]
    job_info: String,
    #[serde(default)]
    is_async: Value,
    #[serde(default)]
    data: Value,
}

fn decode_zone_request(text: &str) -> Result<Inbound, DecodeError> {
    let raw: RawZoneRequest =
        serde_json::from_str(text).map_err(|error| DecodeError::InvalidZoneRequest(error_category(&error)))?;
    let call_type =
        integer(&raw.call_type).ok_or_else(|| DecodeError::InvalidZoneRequest("call_type is not an integer".into()))?;
    let agent_id = integer(&raw.agentid).unwrap_or(0);
    // `data` is a JSON document serialised as a string; tolerate senders that embed it as JSON.
    let data = match raw.data {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match call_type {
        1 => Ok(Inbound::Ability(AbilityCall {
            corp_id: raw.corpid.into(),
            agent_id,
            ability_id: raw.ability_id,
            notify_id: raw.notify_id.into(),
            job_info: raw.job_info,
            is_async: truthy(&raw.is_async),
            request_data: data,
        })),
        2 => decode_zone_event(raw.corpid, agent_id, &data).map(Inbound::ZoneEvent),
        other => Err(DecodeError::UnsupportedCallType(other)),
    }
}

fn decode_zone_event(corp_id: String, agent_id: i64, data: &str) -> Result<ZoneEvent, DecodeError> {
    let raw: Value = serde_json::from_str(data).map_err(|_| DecodeError::InvalidEventData)?;
    let event_type = raw.get("event_type").and_then(Value::as_str).ok_or(DecodeError::InvalidEventData)?.to_owned();
    let timestamp = raw.get("timestamp").and_then(integer).unwrap_or(0);
    let kind = zone_event_kind(&event_type, &raw);
    Ok(ZoneEvent { corp_id: corp_id.into(), agent_id, event_type, timestamp, kind, raw })
}

fn zone_event_kind(event_type: &str, raw: &Value) -> ZoneEventKind {
    // The payload object is named after the event, except that both approval events share one key.
    let payload_key = match event_type {
        "chat_archive_audit_approved_single" | "chat_archive_audit_approved_room" => "chat_archive_audit_approved",
        other => other,
    };
    let Some(payload) = raw.get(payload_key).filter(|value| value.is_object()) else {
        return ZoneEventKind::Unknown;
    };
    let text = |name: &str| match payload.get(name) {
        Some(Value::String(value)) => value.clone(),
        Some(Value::Number(value)) => value.to_string(),
        _ => String::new(),
    };
    let number = |name: &str| payload.get(name).and_then(integer).unwrap_or(0);
    let knowledge_base = |change| ZoneEventKind::KnowledgeBase {
        change,
        knowledge_base_id: text("knowledge_base_id"),
        knowledge_base_name: text("knowledge_base_name"),
    };
    match event_type {
        "conversation_new_message" => ZoneEventKind::ConversationNewMessage { token: text("token") },
        "hit_keyword" => ZoneEventKind::HitKeyword { token: text("token") },
        "chat_archive_audit_approved_single" => {
            ZoneEventKind::AuditApprovedSingle { userid: text("userid"), external_userid: text("external_userid") }
        }
        "chat_archive_audit_approved_room" => {
            ZoneEventKind::AuditApprovedRoom { external_userid: text("external_userid"), chatid: text("chatid") }
        }
        "auth_knowledge_base" => knowledge_base(KnowledgeBaseChange::Authorised),
        "unauth_knowledge_base" => knowledge_base(KnowledgeBaseChange::Unauthorised),
        "delete_knowledge_base" => knowledge_base(KnowledgeBaseChange::Deleted),
        "knowledge_base_learn_done" => ZoneEventKind::KnowledgeBaseLearnDone {
            knowledge_base_id: text("knowledge_base_id"),
            knowledge_base_name: text("knowledge_base_name"),
            doc_id: number("doc_id"),
            learn_status: number("learn_status"),
        },
        "chat_archive_export_finished" => ZoneEventKind::ExportFinished { jobid: text("jobid") },
        _ => ZoneEventKind::Unknown,
    }
}

/// An integer given as a JSON number or a numeric string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_i64().is_some_and(|n| n != 0),
        Value::String(text) => matches!(text.trim(), "true" | "1"),
        _ => false,
    }
}

/// serde_json's messages can quote input; report only the category and position.
fn error_category(error: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", error.classify(), error.line(), error.column())
}

#[cfg(test)]
mod tests;
