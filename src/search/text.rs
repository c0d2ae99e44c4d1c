//! What of a message is searchable (interface §6): the human-written fields of each `msgtype`, and
//! for `mixed` and `chatrecord` the same fields of every part, whose `content` WeCom sends as a
//! JSON string. Parts are joined by a newline, so no search term (which has no whitespace) runs
//! from one field into the next.

use serde_json::Value;

/// How deep `chatrecord` inside `chatrecord` is followed: each level is a JSON string parsed
/// again, and a hostile message must not make that unbounded.
const MAX_DEPTH: usize = 4;

/// The searchable text of a decrypted archive message (the whole object WeCom sent).
pub fn searchable_text(message: &Value) -> String {
    let mut out = String::new();
    if let Some(msgtype) = message.get("msgtype").and_then(Value::as_str) {
        push_message(&mut out, msgtype, message, 0);
    }
    out
}

/// Appends the searchable fields of a top-level message of type `msgtype`.
fn push_message(out: &mut String, msgtype: &str, message: &Value, depth: usize) {
    let payload = match msgtype {
        "markdown" | "news" => message.get("info"),
        "docmsg" => message.get("doc"),
        // WeCom sends these two at the top level; accept an object named after the type too.
        "todo" | "vote" => message.get(msgtype).or(Some(message)),
        other => message.get(other),
    };
    if let Some(payload) = payload {
        push_payload(out, msgtype, payload, depth);
    }
}

/// Appends the searchable fields of a type's object.
fn push_payload(out: &mut String, msgtype: &str, payload: &Value, depth: usize) {
    let fields: &[&str] = match msgtype {
        "text" | "markdown" => &["content"],
        "link" | "weapp" => &["title", "description"],
        "file" => &["filename"],
        "location" => &["title", "address"],
        "docmsg" => &["title"],
        "todo" => &["title", "content"],
        "vote" => &["votetitle", "voteitem"],
        "calendar" => &["title", "place", "remarks"],
        "meeting" => &["topic"],
        "news" => return each_item(payload, |item| push_fields(out, item, &["title", "description"])),
        "mixed" | "chatrecord" if depth < MAX_DEPTH => {
            return each_item(payload, |item| push_part(out, item, depth + 1));
        }
        _ => &[],
    };
    push_fields(out, payload, fields);
}

/// A part of `mixed` or `chatrecord`: `{type, content}` where content is the part's object as a
/// JSON string (or, tolerated, as an object). `ChatRecordText` is the type `text`, and so on.
fn push_part(out: &mut String, part: &Value, depth: usize) {
    let Some(kind) = part.get("type").and_then(Value::as_str) else { return };
    let msgtype = match kind.strip_prefix("ChatRecord") {
        Some(rest) => rest.to_ascii_lowercase(),
        None => kind.to_ascii_lowercase(),
    };
    let parsed;
    let content = match part.get("content") {
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                parsed = value;
                &parsed
            }
            Err(_) => return,
        },
        Some(object @ Value::Object(_)) => object,
        _ => return,
    };
    // A part's object is the type's object itself; some clients wrap it as a whole message.
    let wrapper = match msgtype.as_str() {
        "markdown" | "news" => "info",
        "docmsg" => "doc",
        other => other,
    };
    let payload = content.get(wrapper).filter(|inner| inner.is_object()).unwrap_or(content);
    push_payload(out, &msgtype, payload, depth);
}

fn each_item(payload: &Value, mut visit: impl FnMut(&Value)) {
    if let Some(items) = payload.get("item").and_then(Value::as_array) {
        items.iter().for_each(&mut visit);
    }
}

/// Appends each named field that is a string, or the strings of an array of strings.
fn push_fields(out: &mut String, object: &Value, fields: &[&str]) {
    for field in fields {
        match object.get(field) {
            Some(Value::String(text)) => push_text(out, text),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(|text| push_text(out, text)),
            _ => {}
        }
    }
}

fn push_text(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_msgtype_contributes_its_named_fields_only() {
        let cases = [
            (json!({"msgtype": "text", "text": {"content": "退款"}}), "退款"),
            (json!({"msgtype": "markdown", "info": {"content": "**x**"}}), "**x**"),
            (json!({"msgtype": "link", "link": {"title": "t", "description": "d", "link_url": "u"}}), "t\nd"),
            (json!({"msgtype": "file", "file": {"filename": "a.pdf", "md5sum": "ff"}}), "a.pdf"),
            (json!({"msgtype": "location", "location": {"title": "t", "address": "a", "zoom": 1}}), "t\na"),
            (json!({"msgtype": "weapp", "weapp": {"title": "t", "description": "d", "appid": "x"}}), "t\nd"),
            (json!({"msgtype": "docmsg", "doc": {"title": "文档", "link_url": "u"}}), "文档"),
            (
                json!({"msgtype": "news", "info": {"item": [{"title": "a", "description": "b", "url": "u"}, {"title": "c"}]}}),
                "a\nb\nc",
            ),
            (json!({"msgtype": "todo", "title": "待办", "content": "跟进"}), "待办\n跟进"),
            (
                json!({"msgtype": "vote", "votetitle": "投票", "voteitem": ["同意", "反对"], "voteid": "v"}),
                "投票\n同意\n反对",
            ),
            (
                json!({"msgtype": "calendar", "calendar": {"title": "t", "place": "p", "remarks": "r", "creatorname": "c"}}),
                "t\np\nr",
            ),
            (json!({"msgtype": "meeting", "meeting": {"topic": "周会", "address": "A"}}), "周会"),
            (json!({"msgtype": "image", "image": {"md5sum": "ff", "sdkfileid": "x"}}), ""),
            (json!({"msgtype": "revoke", "revoke": {"pre_msgid": "m1"}}), ""),
        ];
        for (message, expected) in cases {
            assert_eq!(searchable_text(&message), expected, "{message}");
        }
    }

    #[test]
    fn parts_of_mixed_and_chatrecord_are_searchable_through_their_json_strings() {
        let mixed = json!({"msgtype": "mixed", "mixed": {"item": [
            {"type": "text", "content": "{\"content\":\"图文\"}"},
            {"type": "image", "content": "{\"md5sum\":\"ff\"}"},
        ]}});
        assert_eq!(searchable_text(&mixed), "图文");
        let inner = json!({"item": [{"type": "ChatRecordText", "content": "{\"content\":\"深处\"}"}]}).to_string();
        let chatrecord = json!({"msgtype": "chatrecord", "chatrecord": {"title": "聊天记录", "item": [
            {"type": "ChatRecordText", "msgtime": 1, "content": "{\"content\":\"转发\"}"},
            {"type": "ChatRecordFile", "content": "{\"filename\":\"合同.pdf\"}"},
            {"type": "ChatRecordChatRecord", "content": inner},
            {"type": "ChatRecordText", "content": "not json"},
        ]}});
        assert_eq!(searchable_text(&chatrecord), "转发\n合同.pdf\n深处");
    }

    #[test]
    fn nesting_is_followed_only_so_deep() {
        let mut content = json!({"content": "底"}).to_string();
        let mut kind = "ChatRecordText";
        for _ in 0..10 {
            content = json!({"item": [{"type": kind, "content": content}]}).to_string();
            kind = "ChatRecordChatRecord";
        }
        let message = json!({"msgtype": "chatrecord", "chatrecord": serde_json::from_str::<Value>(&content).unwrap()});
        assert_eq!(searchable_text(&message), "", "ten levels deep is past the limit");
    }
}
