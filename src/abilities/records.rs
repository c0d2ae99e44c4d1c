//! Abilities over the stored records: `list_messages`, `get_message`, `list_conversations`,
//! `ingest_status`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AbilityError, age_of, parse_input};
use crate::domain::AbilityCall;
use crate::finance::content::msgtype_code;
use crate::store::{ArchiveFields, MessageFilter, NewRecord, RecordStore, StoredRecord, blocking};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
use super::UNKNOWN_MSGID;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListMessagesInput {
    chatid: Option<String>,
    userid: Option<String>,
    external_userid: Option<String>,
    msgtype: Option<MsgType>,
    begin_time: Option<i64>,
    end_time: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// The zone's integer msgtype, or the classic archive's string.
#[derive(Deserialize)]
#[serde(untagged)]
enum MsgType {
    Code(i64),
    Name(String),
}

pub async fn list_messages(store: Arc<dyn RecordStore>, call: &AbilityCall) -> Result<Value, AbilityError> {
    let input: ListMessagesInput = parse_input(&call.request_data)?;
    let limit = checked_limit(input.limit)?;
    let msgtype = match input.msgtype {
        None => None,
        Some(MsgType::Code(code)) if (0..=1000).contains(&code) => Some(code),
        Some(MsgType::Name(name)) if msgtype_code(&name) > 0 => Some(msgtype_code(&name)),
        Some(MsgType::Code(code)) => {
            return Err(AbilityError::invalid(format!("invalid field `msgtype`: {code} is not a message type")));
        }
        Some(MsgType::Name(_)) => {
            return Err(AbilityError::invalid("invalid field `msgtype`: not a message type this service knows"));
        }
    };
    if let (Some(begin), Some(end)) = (input.begin_time, input.end_time) {
        if begin > end {
            return Err(AbilityError::invalid("invalid field `begin_time`: later than end_time"));
        }
    }
    let after_id = match input.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
        None => 0,
        Some(cursor) => decode_message_cursor(cursor)
            .ok_or_else(|| AbilityError::invalid("invalid field `cursor`: not a cursor this service issued"))?,
    };
    let filter = MessageFilter {
        chatid: non_empty(input.chatid),
        userid: non_empty(input.userid),
        external_userid: non_empty(input.external_userid),
        msgtype,
        begin_time: input.begin_time,
        end_time: input.end_time,
        after_id,
        limit: limit as usize + 1,
    };
    let corp_id = call.corp_id.clone();
    let mut rows = blocking(move || store.list_messages(&corp_id, &filter)).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        rows.last().map_or_else(|| input.cursor.clone().unwrap_or_default(), |last| encode_message_cursor(last.id));
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "msg_list": rows.iter().map(message_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "has_more": has_more,
    }))
}

pub async fn get_message(store: Arc<dyn RecordStore>, call: &AbilityCall) -> Result<Value, AbilityError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        msgid: String,
    }
    let input: Input = parse_input(&call.request_data)?;
    if input.msgid.is_empty() {
        return Err(AbilityError::invalid("invalid field `msgid`: must not be empty"));
    }
    let corp_id = call.corp_id.clone();
    let msgid = input.msgid;
    let record = blocking(move || store.record(&corp_id, &msgid)).await?;
    match record {
        Some(record) => Ok(json!({"errcode": 0, "errmsg": "ok", "message": message_json(&record)})),
        None => Err(AbilityError { errcode: UNKNOWN_MSGID, errmsg: "no stored message with this msgid".into() }),
    }
}

pub async fn list_conversations(store: Arc<dyn RecordStore>, call: &AbilityCall) -> Result<Value, AbilityError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        userid: Option<String>,
        cursor: Option<String>,
        limit: Option<u32>,
    }
    let input: Input = parse_input(&call.request_data)?;
    let limit = checked_limit(input.limit)?;
    let after = match input.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
        None => None,
        Some(cursor) => Some(
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| AbilityError::invalid("invalid field `cursor`: not a cursor this service issued"))?,
        ),
    };
    let corp_id = call.corp_id.clone();
    let userid = non_empty(input.userid);
    let after_key = after.clone();
    let mut rows = blocking(move || {
        store.list_conversations(&corp_id, userid.as_deref(), after_key.as_deref(), limit as usize + 1)
    })
    .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        rows.last().map(|last| URL_SAFE_NO_PAD.encode(&last.key)).unwrap_or_else(|| input.cursor.unwrap_or_default());
    let list: Vec<Value> = rows
        .iter()
        .map(|conversation| {
            let mut item = Map::new();
            item.insert("conversation_id".into(), json!(conversation.key));
            if let Some(chatid) = &conversation.chatid {
                item.insert("chatid".into(), json!(chatid));
            }
            item.insert("participants".into(), json!(conversation.participants));
            item.insert("last_send_time".into(), json!(conversation.last_send_time));
            item.insert("message_count".into(), json!(conversation.message_count));
            Value::Object(item)
        })
        .collect();
    Ok(
        json!({"errcode": 0, "errmsg": "ok", "conversation_list": list, "next_cursor": next_cursor, "has_more": has_more}),
    )
}

pub async fn ingest_status(store: Arc<dyn RecordStore>, call: &AbilityCall) -> Result<Value, AbilityError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Input {}
    let _: Input = parse_input(&call.request_data)?;
    let corp_id = call.corp_id.clone();
    let status = blocking(move || store.ingest_status(&corp_id)).await?;
    let failed_count: i64 = status.failed.iter().map(|(_, count)| count).sum();
    let failed: Vec<Value> =
        status.failed.iter().map(|(status, count)| json!({"status": status.as_str(), "count": count})).collect();
    let mut answer = json!({
        "errcode": 0,
        "errmsg": "ok",
        "corpid": call.corp_id.as_str(),
        "cursor": status.cursor.unwrap_or_default(),
        "last_pull_time": status.last_pull_at.unwrap_or(0),
        "stored_count": status.stored,
        "failed_count": failed_count,
        "failed_by_status": failed,
        "pages": status.pages,
        "newest_send_time": status.newest_send_time.unwrap_or(0),
        "newest_message_age_s": status.newest_send_time.map_or(-1, age_of),
        "dead_letters": {
            "notifications": status.dead_letter_notifications,
            "async_results": status.dead_letter_jobs,
        },
    });
    if !status.content.is_empty() || status.archive_error.is_some() {
        let content: Map<String, Value> =
            status.content.iter().map(|(status, count)| (status.as_string(), json!(count))).collect();
        answer["content_by_status"] = Value::Object(content);
        answer["archive_error"] = match status.archive_error {
            None => Value::Null,
            Some((code, at)) => json!({
                "code": code,
                "at": at,
                "hint": crate::finance::hint(code).unwrap_or("see the SDK error codes in the README"),
            }),
        };
    }
    Ok(answer)
}

/// One message as the abilities show it.
fn message_json(stored: &StoredRecord) -> Value {
    let record = &stored.record;
    let mut message = Map::new();
    message.insert("msgid".into(), json!(record.msgid.as_str()));
    message.insert("sender".into(), json!({"type": record.sender_type, "id": record.sender_id}));
    let receivers: Value = serde_json::from_str(&record.receivers).unwrap_or_else(|_| json!([]));
    message.insert("receiver_list".into(), receivers);
    if let Some(chatid) = &record.chatid {
        message.insert("chatid".into(), json!(chatid));
    }
    message.insert("send_time".into(), json!(record.send_time));
    message.insert("msgtype".into(), json!(record.msgtype));
    if let Some(version) = record.public_key_ver {
        message.insert("public_key_ver".into(), json!(version));
    }
    if let Some(secret_key) = &record.secret_key {
        message.insert("secret_key".into(), json!(secret_key));
    }
    message.insert("decrypt_status".into(), json!(record.decrypt_status.as_str()));
    if let Some(duration) = record.call_duration {
        message.insert("call_duration".into(), json!(duration));
    }
    if let Some(archive) = &record.archive {
        add_archive_fields(&mut message, record, archive);
    }
    Value::Object(message)
}

/// The classic archive's fields (contract §6): the message as WeCom sent it, and its status.
fn add_archive_fields(message: &mut Map<String, Value>, record: &NewRecord, archive: &ArchiveFields) {
    let receivers: Vec<Value> = serde_json::from_str(&record.receivers).unwrap_or_default();
    let tolist: Vec<&str> = receivers.iter().filter_map(|party| party["id"].as_str()).collect();
    message.insert("seq".into(), json!(archive.seq));
    message.insert("action".into(), json!(archive.action));
    message.insert("from".into(), json!(record.sender_id));
    message.insert("tolist".into(), json!(tolist));
    message.insert("roomid".into(), json!(record.chatid.clone().unwrap_or_default()));
    message.insert("msgtime".into(), json!(archive.msgtime));
    // The string WeCom sends (the integer stays under the zone's name `msgtype` elsewhere).
    message.insert("msgtype".into(), json!(archive.msgtype));
    let content = archive.content.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok());
    message.insert("content".into(), content.unwrap_or(Value::Null));
    message.insert("content_status".into(), json!(archive.content_status.as_string()));
}

fn checked_limit(limit: Option<u32>) -> Result<u32, AbilityError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        limit @ 1..=MAX_LIMIT => Ok(limit),
        other => Err(AbilityError::invalid(format!("invalid field `limit`: {other} is not in 1..=1000"))),
    }
}

fn encode_message_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("m:{id}"))
}

fn decode_message_cursor(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix("m:")?.parse().ok().filter(|id: &i64| *id >= 0)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_cursors_round_trip_and_reject_strangers() {
        assert_eq!(decode_message_cursor(&encode_message_cursor(42)), Some(42));
        assert_eq!(decode_message_cursor("garbage!"), None);
        assert_eq!(decode_message_cursor(&URL_SAFE_NO_PAD.encode("m:-3")), None);
    }
}
