//! The notify_id mailbox: every WeCom event and every async result is kept for the application,
//! announced through `spec_notify_app`, and fetched with the `get_callback_data` ability.
//!
//! An entry is written before the event is acknowledged (so an acknowledged event is never lost),
//! with a notify_id chosen at once; a background loop then announces it with `spec_notify_app`
//! (passing that id) until WeCom accepts it. Because the id is stored before it is announced, an
//! application that fetches as soon as `program_notify` reaches it finds the entry. Entries
//! created by `conversation_new_message` or `msgaudit_notify` wait for the pull they started and
//! carry its summary. Notified entries stay fetchable for `mailbox.ttl_s`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::inbound::{ClassicEvent, ClassicEventKind, Event, ZoneEvent, ZoneEventKind, unix_now};
use crate::ingest::PullListener;
use crate::store::{MailboxEntry, NewMailboxEntry, Store, StoreError, blocking};
use crate::upstream::UpstreamClient;

/// WeCom's errcode for an unknown or expired notify_id.
pub const INVALID_NOTIFY_ID: i64 = 710646;
/// Entries notified per round of the notifier.
const NOTIFY_BATCH: usize = 100;

/// The `notify_scene` sent with `spec_notify_app`, per kind of entry (documented in the README).
pub fn notify_scene(kind: &str) -> u8 {
    match kind {
        "conversation_new_message" => 1,
        "hit_keyword" => 2,
        "chat_archive_audit_approved_single" => 3,
        "chat_archive_audit_approved_room" => 4,
        "auth_knowledge_base" => 5,
        "unauth_knowledge_base" => 6,
        "delete_knowledge_base" => 7,
        "knowledge_base_learn_done" => 8,
        "chat_archive_export_finished" => 9,
        "msgaudit_notify" => 20,
        "change_external_contact" => 21,
        "change_contact" => 22,
        "async_result" => 50,
        _ if kind.starts_with("classic:") => 29,
        _ => 99,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// One answer of `get_callback_data`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Found(Value),
    /// Unknown, expired, not yet notified, or a page out of range.
    NotFound,
}

pub struct Mailbox {
    store: Arc<dyn Store>,
    upstream: UpstreamClient,
    ttl: Duration,
    max_answer_bytes: usize,
    retry_delay: Duration,
    wake: Notify,
}

impl Mailbox {
    pub fn new(
        store: Arc<dyn Store>,
        upstream: UpstreamClient,
        ttl: Duration,
        max_answer_bytes: usize,
        retry_delay: Duration,
    ) -> Mailbox {
        Mailbox { store, upstream, ttl, max_answer_bytes, retry_delay, wake: Notify::new() }
    }

    /// Keeps an event. `Some(id)` for a new entry, `None` for a delivery seen before. An event
    /// that starts a pull waits for it (see [`pull_request`]) before it is notified.
    pub async fn keep_event(&self, event: &Event, delivery_key: &[u8]) -> Result<Option<i64>, MailboxError> {
        let awaiting_pull = pull_request(event).is_some();
        let (corp_id, kind, payload) = match event {
            Event::Zone(zone) => (zone.corp_id.clone(), zone.event_type.clone(), zone_payload(zone)),
            Event::Classic { corp_id, event } => (corp_id.clone(), classic_kind(event), classic_payload(event)),
        };
        let entry = NewMailboxEntry {
            corp_id,
            delivery_key: Some(delivery_key.to_vec()),
            notify_scene: notify_scene(&kind),
            kind,
            payload: payload.to_string(),
            awaiting_pull,
            notify_id: new_notify_id(),
        };
        let id = self.insert(entry).await?;
        if id.is_some() && !awaiting_pull {
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// Keeps the result of an async ability call.
    pub async fn keep_async_result(
        &self,
        corp_id: &str,
        job_id: i64,
        ability_id: &str,
        job_info: &str,
        output: &Value,
    ) -> Result<(), MailboxError> {
        let payload = json!({
            "event_type": "async_result",
            "timestamp": unix_now(),
            "async_result": {"ability_id": ability_id, "job_info": job_info, "result": output},
        });
        let entry = NewMailboxEntry {
            corp_id: corp_id.to_owned(),
            delivery_key: Some(format!("job:{job_id}").into_bytes()),
            kind: "async_result".to_owned(),
            notify_scene: notify_scene("async_result"),
            payload: payload.to_string(),
            awaiting_pull: false,
            notify_id: new_notify_id(),
        };
        self.insert(entry).await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn insert(&self, entry: NewMailboxEntry) -> Result<Option<i64>, MailboxError> {
        let store = Arc::clone(&self.store);
        Ok(blocking(move || store.mailbox_insert(&entry, unix_now())).await?)
    }

    /// Entries of `corp_id` still waiting for a pull (after a restart).
    pub fn awaiting_pull(&self, corp_id: &str) -> Result<Vec<i64>, StoreError> {
        self.store.mailbox_awaiting_pull(corp_id)
    }

    /// `get_callback_data`: the payload kept under `notify_id`, or one page of it.
    pub async fn fetch(&self, corp_id: &str, notify_id: &str, page: u32) -> Result<Fetched, MailboxError> {
        let store = Arc::clone(&self.store);
        let (owned_corp, owned_id) = (corp_id.to_owned(), notify_id.to_owned());
        let Some(entry) = blocking(move || store.mailbox_by_notify_id(&owned_corp, &owned_id, unix_now())).await?
        else {
            return Ok(Fetched::NotFound);
        };
        let Some(answer) = answer_page(&entry, notify_id, page, self.max_answer_bytes) else {
            return Ok(Fetched::NotFound);
        };
        let store = Arc::clone(&self.store);
        blocking(move || store.mailbox_record_fetch(entry.id, page, unix_now())).await?;
        Ok(Fetched::Found(answer))
    }

    /// Notifies pending entries until `shutdown`; also deletes expired ones.
    pub async fn run_notifier(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let delay = match self.notify_round().await {
                Ok(true) => None,
                Ok(false) => Some(self.retry_delay),
                Err(error) => {
                    tracing::warn!(%error, "mailbox round failed");
                    Some(self.retry_delay)
                }
            };
            let wait = async {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    // Nothing pending: sleep until woken, expiring old entries now and then.
                    None => {
                        let _ = tokio::time::timeout(self.ttl.min(Duration::from_secs(60)), self.wake.notified()).await;
                    }
                }
            };
            tokio::select! {
                () = wait => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round: expire, then notify everything pending. True when nothing is left pending.
    async fn notify_round(&self) -> Result<bool, MailboxError> {
        let store = Arc::clone(&self.store);
        let expired = blocking(move || store.mailbox_expire(unix_now())).await?;
        if expired > 0 {
            tracing::debug!(expired, "mailbox entries expired");
        }
        let store = Arc::clone(&self.store);
        let pending = blocking(move || store.mailbox_pending_notifications(NOTIFY_BATCH)).await?;
        let mut all_notified = true;
        for entry in &pending {
            if !self.notify(entry).await? {
                all_notified = false;
            }
        }
        Ok(all_notified && pending.len() < NOTIFY_BATCH)
    }

    async fn notify(&self, entry: &MailboxEntry) -> Result<bool, MailboxError> {
        #[derive(Deserialize)]
        struct Notified {
            #[serde(default)]
            notify_id: String,
        }
        let request = json!({"notify_scene": entry.notify_scene, "notify_id": entry.notify_id});
        let outcome = self.upstream.invoke::<_, Notified>(&entry.corp_id, "spec_notify_app", &request).await;
        let store = Arc::clone(&self.store);
        let id = entry.id;
        match outcome {
            Ok(answer) if !answer.notify_id.is_empty() => {
                let now = unix_now();
                let expires_at = now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
                let notify_id = answer.notify_id;
                tracing::info!(corp_id = %entry.corp_id, kind = %entry.kind, "mailbox entry notified");
                blocking(move || store.mailbox_set_notified(id, &notify_id, now, expires_at)).await?;
                Ok(true)
            }
            Ok(_) | Err(_) => {
                if let Err(error) = &outcome {
                    tracing::warn!(corp_id = %entry.corp_id, %error, "spec_notify_app failed; the entry is kept and retried");
                }
                blocking(move || store.mailbox_notify_failed(id)).await?;
                Ok(false)
            }
        }
    }
}

impl PullListener for Mailbox {
    /// Attaches to each waiting entry what was stored since it arrived (the pull it started
    /// included), then queues its notification.
    fn pull_finished(&self, corp_id: &str, entries: &[i64]) {
        for &id in entries {
            let outcome = self.store.mailbox_entry(id).and_then(|entry| match entry {
                Some(entry) => {
                    let since = self.store.stored_since(corp_id, id)?;
                    let mut payload: Value = serde_json::from_str(&entry.payload).unwrap_or_else(|_| json!({}));
                    payload["pull_summary"] = json!({
                        "new_records": since.records,
                        "chats_touched": since.conversations,
                        "begin_time": since.begin_time,
                        "end_time": since.end_time,
                        "without_secret_key": since.without_secret_key,
                    });
                    self.store.mailbox_finish_pull(id, &payload.to_string())
                }
                None => Ok(()),
            });
            if let Err(error) = outcome {
                tracing::warn!(corp_id, %error, "could not attach a pull summary; the entry waits for the next pull");
            }
        }
        self.wake.notify_one();
    }
}

/// A fresh notify_id (34 characters; WeCom accepts supplied ids up to 64 bytes).
fn new_notify_id() -> String {
    format!("wz{:032x}", rand::random::<u128>())
}

/// The answer for `page`: the whole payload merged into `{errcode, errmsg, notify_id, …}` when it
/// fits in `max_bytes`, else one part of the payload text per page.
fn answer_page(entry: &MailboxEntry, notify_id: &str, page: u32, max_bytes: usize) -> Option<Value> {
    let payload: Value = serde_json::from_str(&entry.payload).ok()?;
    let mut whole = Map::new();
    whole.insert("errcode".into(), json!(0));
    whole.insert("errmsg".into(), json!("ok"));
    whole.insert("notify_id".into(), json!(notify_id));
    if let Value::Object(fields) = &payload {
        whole.extend(fields.clone());
    }
    let whole = Value::Object(whole);
    if whole.to_string().len() <= max_bytes {
        return (page == 0).then_some(whole);
    }
    // Escaping can double a part's size (quotes, backslashes), hence the halving.
    let parts = split_utf8(&entry.payload, (max_bytes.saturating_sub(512) / 2).max(256));
    let part = parts.get(page as usize)?;
    Some(json!({
        "errcode": 0,
        "errmsg": "ok",
        "notify_id": notify_id,
        "event_type": payload.get("event_type").cloned().unwrap_or(Value::Null),
        "timestamp": payload.get("timestamp").cloned().unwrap_or(Value::Null),
        "page": page,
        "page_count": parts.len(),
        "payload_part": part,
    }))
}

/// Splits `text` into pieces of at most `max` bytes, on character boundaries.
fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

fn zone_payload(event: &ZoneEvent) -> Value {
    match &event.raw {
        Value::Object(_) => event.raw.clone(),
        other => json!({"event_type": event.event_type, "timestamp": event.timestamp, "raw": other}),
    }
}

fn classic_kind(event: &ClassicEvent) -> String {
    match &event.kind {
        ClassicEventKind::MsgauditNotify { .. } => "msgaudit_notify".to_owned(),
        ClassicEventKind::ChangeExternalContact { .. } => "change_external_contact".to_owned(),
        ClassicEventKind::ChangeContact { .. } => "change_contact".to_owned(),
        _ => format!("classic:{}", event.event.clone().unwrap_or_else(|| event.msg_type.clone())),
    }
}

/// `{event_type, timestamp, classic_event: {every XML field}}`.
fn classic_payload(event: &ClassicEvent) -> Value {
    let fields: Map<String, Value> =
        event.fields.iter().map(|(name, value)| (name.clone(), Value::String(value.clone()))).collect();
    json!({
        "event_type": event.event.clone().unwrap_or_else(|| event.msg_type.clone()),
        "timestamp": event.create_time.unwrap_or_else(unix_now),
        "classic_event": fields,
    })
}

/// The pull an event starts, if any: `Some(token)` for `conversation_new_message` (its token goes
/// to `sync_msg`), `Some(None)` for classic `msgaudit_notify`. Its entry carries the pull's summary.
pub fn pull_request(event: &Event) -> Option<Option<String>> {
    match event {
        Event::Zone(zone) => match &zone.kind {
            ZoneEventKind::ConversationNewMessage { token } => Some(Some(token.clone())),
            _ => None,
        },
        Event::Classic { event, .. } => matches!(event.kind, ClassicEventKind::MsgauditNotify { .. }).then_some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: &str) -> MailboxEntry {
        MailboxEntry {
            id: 1,
            corp_id: "ww".into(),
            kind: "k".into(),
            notify_scene: 1,
            payload: payload.into(),
            state: "notified".into(),
            notify_id: Some("n".into()),
            created_at: 0,
            notified_at: Some(0),
            expires_at: Some(10),
            notify_attempts: 1,
            fetch_count: 0,
        }
    }

    #[test]
    fn small_payloads_are_answered_whole_and_merged() {
        let answer = answer_page(&entry(r#"{"event_type":"hit_keyword","hit_keyword":{"token":"t"}}"#), "n", 0, 4096);
        let answer = answer.unwrap();
        assert_eq!(answer["hit_keyword"]["token"], "t");
        assert_eq!(answer["notify_id"], "n");
        assert_eq!(answer["errcode"], 0);
        assert!(answer_page(&entry("{}"), "n", 1, 4096).is_none(), "only page 0 exists");
    }

    #[test]
    fn large_payloads_are_paged_and_reassemble() {
        let big = json!({"event_type": "async_result", "timestamp": 1, "data": "汉".repeat(3000)}).to_string();
        let mut text = String::new();
        let first = answer_page(&entry(&big), "n", 0, 2048).unwrap();
        let count = first["page_count"].as_u64().unwrap() as u32;
        assert!(count > 1);
        for page in 0..count {
            let answer = answer_page(&entry(&big), "n", page, 2048).unwrap();
            assert!(answer.to_string().len() <= 2048, "page {page} fits");
            text.push_str(answer["payload_part"].as_str().unwrap());
        }
        assert_eq!(text, big);
        assert!(answer_page(&entry(&big), "n", count, 2048).is_none());
    }

    #[test]
    fn scenes_are_distinct_per_known_kind() {
        let kinds = [
            "conversation_new_message",
            "hit_keyword",
            "chat_archive_audit_approved_single",
            "chat_archive_audit_approved_room",
            "auth_knowledge_base",
            "unauth_knowledge_base",
            "delete_knowledge_base",
            "knowledge_base_learn_done",
            "chat_archive_export_finished",
            "msgaudit_notify",
            "change_external_contact",
            "change_contact",
            "async_result",
        ];
        let mut scenes: Vec<u8> = kinds.iter().map(|kind| notify_scene(kind)).collect();
        scenes.sort_unstable();
        scenes.dedup();
        assert_eq!(scenes.len(), kinds.len());
        assert_eq!(notify_scene("something_new"), 99);
    }
}
