//! What DecryptData returned, checked before it is trusted. DecryptData does not authenticate: a
//! damaged ciphertext decrypts to damaged bytes with return code 0. So the plaintext must be UTF-8,
//! parse as a JSON object once raw control characters are escaped, and carry the record's `msgid`.
//! Pure: no IO.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::MediaRef;

/// A decrypted message that passed validation. `content` is the whole object as WeCom sent it
/// (control characters escaped), every field kept; the rest are the fields the store indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMessage {
    pub action: String,
    pub from: String,
    pub tolist: Vec<String>,
    pub roomid: String,
    /// Milliseconds.
    pub msgtime: i64,
    /// WeCom's string (`text`, `image`, …); `switch` for a switch record, which has none.
    pub msgtype: String,
    pub content: String,
    /// The media files it refers to (its own, and those inside `mixed` / `chatrecord` items).
    pub media: Vec<MediaRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContent {
    #[error("the plaintext is not UTF-8")]
    NotUtf8,
    #[error("the plaintext is not a JSON object")]
    NotJson,
    #[error("the plaintext has no msgid")]
    NoMsgid,
    #[error("the plaintext's msgid is not the record's")]
    MsgidMismatch,
}

/// The fields the store indexes, read without building the whole document (the message's own
/// object is skipped unless it names media). Each is a `Value`, so an unexpected type is
/// tolerated as it would be by WeCom's other consumers.
#[derive(Deserialize)]
struct Header {
    msgid: Option<Value>,
    action: Option<Value>,
    from: Option<Value>,
    tolist: Option<Value>,
    roomid: Option<Value>,
    msgtime: Option<Value>,
    msgtype: Option<Value>,
    /// A switch record's time and user.
    time: Option<Value>,
    user: Option<Value>,
}

/// Validates a plaintext for the record `msgid`.
pub fn validate(msgid: &str, plaintext: &[u8]) -> Result<ArchiveMessage, InvalidContent> {
    let text = std::str::from_utf8(plaintext).map_err(|_| InvalidContent::NotUtf8)?;
    let content = escape_control_characters(text);
    let header: Header = serde_json::from_str(&content).map_err(|_| InvalidContent::NotJson)?;
    match header.msgid.as_ref().and_then(Value::as_str) {
        None => return Err(InvalidContent::NoMsgid),
        Some(found) if found != msgid => return Err(InvalidContent::MsgidMismatch),
        Some(_) => {}
    }
    let text_of = |value: &Option<Value>| value.as_ref().and_then(Value::as_str).unwrap_or_default().to_owned();
    let action = text_of(&header.action);
    let switch = action == "switch";
    let msgtype = if switch { "switch".to_owned() } else { text_of(&header.msgtype) };
    let media = if names_media(&msgtype) {
        serde_json::from_str::<Value>(&content).map(|message| media_refs(&msgtype, &message)).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(ArchiveMessage {
        media,
        from: if switch { text_of(&header.user) } else { text_of(&header.from) },
        tolist: header
            .tolist
            .as_ref()
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        roomid: text_of(&header.roomid),
        msgtime: number_of(if switch { &header.time } else { &header.msgtime }),
        msgtype,
        action,
        content,
    })
}

fn number_of(value: &Option<Value>) -> i64 {
    match value {
        Some(Value::Number(number)) => number.as_i64().unwrap_or_default(),
        Some(Value::String(text)) => text.parse().unwrap_or_default(),
        _ => 0,
    }
}

/// Whether messages of this type can name media files.
fn names_media(msgtype: &str) -> bool {
    MEDIA_TYPES.contains(&msgtype) || matches!(msgtype, "mixed" | "chatrecord")
}

/// The types whose object names a file (reference §7.2).
const MEDIA_TYPES: &[&str] = &["image", "voice", "video", "emotion", "file", "voip_doc_share", "meeting_voice_call"];

/// The media files of a message: the object named after its type, and for `mixed` and
/// `chatrecord` each item whose (JSON-string) content names one.
pub fn media_refs(msgtype: &str, message: &Value) -> Vec<MediaRef> {
    let mut found = Vec::new();
    if MEDIA_TYPES.contains(&msgtype) {
        found.extend(media_ref(&message[msgtype]));
    }
    if matches!(msgtype, "mixed" | "chatrecord") {
        for item in message[msgtype]["item"].as_array().into_iter().flatten() {
            let content = match &item["content"] {
                Value::String(text) => serde_json::from_str::<Value>(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            found.extend(media_ref(&content));
        }
    }
    found
}

fn media_ref(object: &Value) -> Option<MediaRef> {
    let sdkfileid = object["sdkfileid"].as_str().filter(|id| !id.is_empty())?;
    let size = ["filesize", "voice_size", "imagesize", "fileSize"]
        .iter()
        .find_map(|key| object[key].as_u64().or_else(|| object[key].as_str()?.parse().ok()))
        .unwrap_or(0);
    Some(MediaRef {
        sdkfileid: sdkfileid.to_owned(),
        md5sum: object["md5sum"].as_str().unwrap_or_default().to_ascii_lowercase(),
        size,
        filename: object["filename"].as_str().map(str::to_owned),
    })
}

/// Raw control characters (which some plaintexts carry and JSON forbids inside strings) become
/// `\u00XX` escapes inside strings, so nothing of the text is lost; outside strings, where only
/// whitespace is legal, those other than tab, newline and carriage return become spaces.
pub fn escape_control_characters(text: &str) -> String {
    if !text.bytes().any(|byte| byte < 0x20) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        let control = (c as u32) < 0x20;
        if in_string {
            if control {
                out.push_str(&format!("\\u{:04x}", c as u32));
                escaped = false;
                continue;
            }
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
        } else if control && !matches!(c, '\t' | '\n' | '\r') {
            out.push(' ');
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The `sync_msg` integer for a classic msgtype (reference §6.1), so one `msgtype` column serves
/// both archives; 0 for types without one.
pub fn msgtype_code(msgtype: &str) -> i64 {
    match msgtype {
        "text" => 1,
        "image" => 2,
        "emotion" => 3,
        "link" => 4,
        "weapp" => 5,
        "voice" => 6,
        "video" => 7,
        "file" => 8,
        "card" => 9,
        "chatrecord" => 10,
        "sphfeed" => 11,
        "calendar" => 12,
        "redpacket" | "external_redpacket" => 13,
        "location" => 14,
        "meeting" => 15,
        "todo" => 16,
        "vote" => 17,
        "docmsg" => 18,
        "news" => 19,
        "mixed" => 20,
        "meeting_voice_call" => 21,
        "voiptext" => 22,
        "qydiskfile" => 23,
        "agree" => 24,
        "disagree" => 25,
        "solitaire" => 26,
        "markdown" => 27,
        "note" => 28,
        _ => 0,
    }
}

/// The `sync_msg` party type of a classic id: external contacts (`wo…`, `wm…`) 2, bots (`wb…`) 3,
/// members 1.
pub fn party_type(id: &str) -> i64 {
    if id.starts_with("wo") || id.starts_with("wm") {
        2
    } else if id.starts_with("wb") {
        3
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSGID: &str = "CAQQ2fbb4QUY0On2rYSAgAMgip/yzgs=";
    const OFFICIAL: &str = r#"{"msgid":"CAQQ2fbb4QUY0On2rYSAgAMgip/yzgs=","action":"send","from":"XuJinSheng","tolist":["icefog"],"roomid":"","msgtime":0,"msgtype":"text","text":{"content":"666"}}"#;

    #[test]
    fn the_official_plaintext_validates_with_every_field_kept() {
        let message = validate(MSGID, OFFICIAL.as_bytes()).unwrap();
        assert_eq!(message.from, "XuJinSheng");
        assert_eq!(message.tolist, vec!["icefog"]);
        assert_eq!(message.msgtype, "text");
        assert_eq!(message.content, OFFICIAL);
    }

    #[test]
    fn damaged_foreign_and_non_utf8_plaintexts_are_invalid() {
        let damaged = OFFICIAL.replacen('{', "#", 1);
        assert_eq!(validate(MSGID, damaged.as_bytes()), Err(InvalidContent::NotJson));
        assert_eq!(validate("other", OFFICIAL.as_bytes()), Err(InvalidContent::MsgidMismatch));
        assert_eq!(validate(MSGID, b"{\"action\":\"send\"}"), Err(InvalidContent::NoMsgid));
        assert_eq!(validate(MSGID, &[b'{', 0xff, b'}']), Err(InvalidContent::NotUtf8));
    }

    #[test]
    fn control_characters_inside_strings_are_escaped_not_lost() {
        let raw = "{\"msgid\":\"m\",\"msgtype\":\"text\",\"text\":{\"content\":\"a\u{1}b\nc\"}}\u{0}";
        let message = validate("m", raw.as_bytes()).unwrap();
        let object: Value = serde_json::from_str(&message.content).unwrap();
        assert_eq!(object["text"]["content"], "a\u{1}b\nc");
    }

    #[test]
    fn media_is_found_in_its_own_object_and_inside_mixed_items() {
        let image =
            serde_json::json!({"msgtype": "image", "image": {"md5sum": "AB12", "filesize": 10, "sdkfileid": "f1"}});
        assert_eq!(
            media_refs("image", &image),
            vec![MediaRef { sdkfileid: "f1".into(), md5sum: "ab12".into(), size: 10, filename: None }]
        );
        let inner =
            serde_json::json!({"md5sum": "cd", "filesize": 3, "sdkfileid": "f2", "filename": "a.pdf"}).to_string();
        let mixed = serde_json::json!({"msgtype": "mixed", "mixed": {"item": [{"type": "text", "content": "{}"}, {"type": "file", "content": inner}]}});
        assert_eq!(media_refs("mixed", &mixed)[0].filename.as_deref(), Some("a.pdf"));
        assert!(media_refs("text", &serde_json::json!({"text": {"content": "x"}})).is_empty());
    }

    #[test]
    fn a_switch_record_takes_its_user_and_time() {
        let raw = r#"{"msgid":"s1","action":"switch","time":1554119421840,"user":"XuJinSheng"}"#;
        let message = validate("s1", raw.as_bytes()).unwrap();
        assert_eq!(
            (message.from.as_str(), message.msgtime, message.msgtype.as_str()),
            ("XuJinSheng", 1554119421840, "switch")
        );
    }
}
