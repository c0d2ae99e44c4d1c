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
use tokio::sync::Notify;

use crate::background::{self, EntryRetry, Round, Worker};
use crate::domain::{BoxFuture, ClassicEvent, Clock, CorpId, Event, EventKind, NotifyId, ZoneEvent};
use crate::ingest::PullListener;
use crate::metrics::Metrics;
use crate::store::{MailboxEntry, MailboxStore, NewMailboxEntry, StoreError, blocking};
use crate::upstream::UpstreamClient;

/// WeCom's errcode for an unknown or expired notify_id.
pub const INVALID_NOTIFY_ID: i64 = 710646;
/// Entries notified per round of the notifier.
const NOTIFY_BATCH: usize = 100;

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
    store: Arc<dyn MailboxStore>,
    upstream: UpstreamClient,
    ttl: Duration,
    max_answer_bytes: usize,
    /// Wakes the notifier (see [`Mailbox::wake`]).
    wake: Arc<Notify>,
    clock: Clock,
    retry: EntryRetry,
    metrics: Arc<Metrics>,
}

/// How the mailbox keeps and announces its entries.
#[derive(Debug, Clone, Copy)]
pub struct MailboxPolicy {
    pub ttl: Duration,
    pub max_answer_bytes: usize,
    pub retry: EntryRetry,
}

impl Mailbox {
    pub fn new(
        store: Arc<dyn MailboxStore>,
        upstream: UpstreamClient,
        policy: MailboxPolicy,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Mailbox {
        Mailbox {
            store,
            upstream,
            ttl: policy.ttl,
            max_answer_bytes: policy.max_answer_bytes,
            wake: Arc::new(Notify::new()),
            clock,
            retry: policy.retry,
            metrics,
        }
    }

    /// What wakes the notifier: an entry became ready to be announced.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// How long the notifier may stay idle: expired entries are deleted at least this often.
    pub fn idle_interval(&self) -> Duration {
        self.ttl.min(Duration::from_secs(60))
    }

    /// Keeps an event. `Some(id)` for a new entry, `None` for a delivery seen before. An event
    /// that starts a pull waits for it (see [`Event::pull_request`]) before it is notified.
    pub async fn keep_event(&self, event: &Event, delivery_key: &[u8]) -> Result<Option<i64>, MailboxError> {
        let awaiting_pull = event.pull_request().is_some();
        let payload = match event {
            Event::Zone(zone) => zone_payload(zone),
            Event::Classic { event, .. } => self.classic_payload(event),
        };
        let entry = NewMailboxEntry {
            corp_id: event.corp_id().clone(),
            delivery_key: Some(delivery_key.to_vec()),
            kind: event.type_name(),
            notify_scene: event.kind().scene(),
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

    /// The entry that keeps the result of an async ability call. The job store writes it in
    /// the transaction that keeps the result; then [`Mailbox::wake`] announces it.
    pub fn async_result_entry(
        &self,
        corp_id: &CorpId,
        job_id: i64,
        ability_id: &str,
        job_info: &str,
        output: &Value,
    ) -> NewMailboxEntry {
        let kind = EventKind::AsyncResult;
        let payload = json!({
            "event_type": kind.name(),
            "timestamp": self.clock.now(),
            "async_result": {"ability_id": ability_id, "job_info": job_info, "result": output},
        });
        NewMailboxEntry {
            corp_id: corp_id.clone(),
            delivery_key: Some(format!("job:{job_id}").into_bytes()),
            kind: kind.name().to_owned(),
            notify_scene: kind.scene(),
            payload: payload.to_string(),
            awaiting_pull: false,
            notify_id: new_notify_id(),
        }
    }

    async fn insert(&self, entry: NewMailboxEntry) -> Result<Option<i64>, MailboxError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        Ok(blocking(move || store.mailbox_insert(&entry, now)).await?)
    }

    /// `get_callback_data`: the payload kept under `notify_id`, or one page of it.
    pub async fn fetch(&self, corp_id: &CorpId, notify_id: &NotifyId, page: u32) -> Result<Fetched, MailboxError> {
        let store = Arc::clone(&self.store);
        let (owned_corp, owned_id) = (corp_id.clone(), notify_id.clone());
        let now = self.clock.now();
        let Some(entry) = blocking(move || store.mailbox_by_notify_id(&owned_corp, &owned_id, now)).await? else {
            return Ok(Fetched::NotFound);
        };
        let Some(answer) = answer_page(&entry, notify_id, page, self.max_answer_bytes) else {
            return Ok(Fetched::NotFound);
        };
        let store = Arc::clone(&self.store);
        blocking(move || store.mailbox_record_fetch(entry.id, page, now)).await?;
        Ok(Fetched::Found(answer))
    }

    /// One round: expire, then notify the entries that are due, each on its own schedule, so
    /// entries that keep failing wait out their backoff behind the others, never in front.
    async fn notify_round(&self) -> Result<Round, MailboxError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let expired = blocking(move || store.mailbox_expire(now)).await?;
        if expired > 0 {
            tracing::debug!(expired, "mailbox entries expired");
        }
        let store = Arc::clone(&self.store);
        let now_ms = self.clock.now_ms();
        let due = blocking(move || store.mailbox_due_notifications(now_ms, NOTIFY_BATCH)).await?;
        for entry in &due {
            self.notify(entry).await?;
        }
        let store = Arc::clone(&self.store);
        let next_due = blocking(move || store.mailbox_next_attempt()).await?;
        Ok(background::after_batch(due.len() == NOTIFY_BATCH, next_due, self.clock.now_ms()))
    }

    async fn notify(&self, entry: &MailboxEntry) -> Result<(), MailboxError> {
        #[derive(Deserialize)]
        struct Notified {
            #[serde(default)]
            notify_id: String,
        }
        let request = json!({"notify_scene": entry.notify_scene, "notify_id": entry.notify_id});
        let outcome = self.upstream.invoke::<_, Notified>(&entry.corp_id, "spec_notify_app", &request).await;
        let store = Arc::clone(&self.store);
        let id = entry.id;
        // WeCom uses a supplied notify_id as it is; an answer that omits it accepted ours.
        let accepted = outcome.as_ref().map(|answer| {
            Some(answer.notify_id.clone())
                .filter(|answered| !answered.is_empty())
                .or_else(|| entry.notify_id.as_ref().map(|ours| ours.to_string()))
        });
        match accepted {
            Ok(Some(notify_id)) => {
                let now = self.clock.now();
                let expires_at = now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2));
                tracing::info!(corp_id = %entry.corp_id, kind = %entry.kind, "mailbox entry notified");
                blocking(move || store.mailbox_set_notified(id, &notify_id, now, expires_at)).await?;
            }
            Ok(None) | Err(_) => {
                let retry_at = self.retry.next_attempt(entry.notify_attempts + 1, self.clock.now_ms());
                match (&outcome, retry_at) {
                    (_, None) => {
                        self.metrics.dead_lettered("mailbox");
                        tracing::error!(corp_id = %entry.corp_id, kind = %entry.kind, attempts = entry.notify_attempts + 1,
                            "spec_notify_app kept failing; the entry is a dead letter (kept, no longer retried)");
                    }
                    (Err(error), Some(_)) => {
                        tracing::warn!(corp_id = %entry.corp_id, %error, "spec_notify_app failed; the entry is kept and retried");
                    }
                    (Ok(_), Some(_)) => {}
                }
                blocking(move || store.mailbox_notify_failed(id, retry_at)).await?;
            }
        }
        Ok(())
    }

    /// `{event_type, timestamp, classic_event: {every XML field}}`.
    fn classic_payload(&self, event: &ClassicEvent) -> Value {
        let fields: Map<String, Value> =
            event.fields.iter().map(|(name, value)| (name.clone(), Value::String(value.clone()))).collect();
        json!({
            "event_type": event.event.clone().unwrap_or_else(|| event.msg_type.clone()),
            "timestamp": event.create_time.unwrap_or_else(|| self.clock.now()),
            "classic_event": fields,
        })
    }
}

/// The notifier: announces pending entries with `spec_notify_app` and expires old ones.
impl Worker for Mailbox {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move { background::logged("mailbox notifier", self.notify_round().await) })
    }
}

impl PullListener for Mailbox {
    /// Attaches to each waiting entry what was stored since it arrived (the pull it started
    /// included), then queues its notification. Blocking: the scheduler calls it through
    /// `store::blocking`.
    fn pull_finished(&self, corp_id: &CorpId, entries: &[i64]) {
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
                tracing::warn!(%corp_id, %error, "could not attach a pull summary; the entry waits for the next pull");
            }
        }
        self.wake.notify_one();
    }

    fn awaiting_pull(&self, corp_id: &CorpId) -> Vec<i64> {
        self.store.mailbox_awaiting_pull(corp_id).unwrap_or_else(|error| {
            tracing::warn!(%corp_id, %error, "entries waiting for a pull could not be read; they wait for a restart");
            Vec::new()
        })
    }
}

/// A fresh notify_id (34 characters; WeCom accepts supplied ids up to 64 bytes).
fn new_notify_id() -> NotifyId {
    NotifyId::from(format!("wz{:032x}", rand::random::<u128>()))
}

/// The answer for `page`: the whole payload merged into `{errcode, errmsg, notify_id, …}` when it
/// fits in `max_bytes`, else one part of the payload text per page.
fn answer_page(entry: &MailboxEntry, notify_id: &NotifyId, page: u32, max_bytes: usize) -> Option<Value> {
    let payload: Value = serde_json::from_str(&entry.payload).ok()?;
    let mut whole = Map::new();
    whole.insert("errcode".into(), json!(0));
    whole.insert("errmsg".into(), json!("ok"));
    whole.insert("notify_id".into(), json!(notify_id.as_str()));
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
        "notify_id": notify_id.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MailboxState;

    fn entry(payload: &str) -> MailboxEntry {
        MailboxEntry {
            id: 1,
            corp_id: "ww".into(),
            kind: "k".into(),
            notify_scene: 1,
            payload: payload.into(),
            state: MailboxState::Notified,
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
        let answer =
            answer_page(&entry(r#"{"event_type":"hit_keyword","hit_keyword":{"token":"t"}}"#), &"n".into(), 0, 4096);
        let answer = answer.unwrap();
        assert_eq!(answer["hit_keyword"]["token"], "t");
        assert_eq!(answer["notify_id"], "n");
        assert_eq!(answer["errcode"], 0);
        assert!(answer_page(&entry("{}"), &"n".into(), 1, 4096).is_none(), "only page 0 exists");
    }

    #[test]
    fn large_payloads_are_paged_and_reassemble() {
        let big = json!({"event_type": "async_result", "timestamp": 1, "data": "汉".repeat(3000)}).to_string();
        let mut text = String::new();
        let first = answer_page(&entry(&big), &"n".into(), 0, 2048).unwrap();
        let count = first["page_count"].as_u64().unwrap() as u32;
        assert!(count > 1);
        for page in 0..count {
            let answer = answer_page(&entry(&big), &"n".into(), page, 2048).unwrap();
            assert!(answer.to_string().len() <= 2048, "page {page} fits");
            text.push_str(answer["payload_part"].as_str().unwrap());
        }
        assert_eq!(text, big);
        assert!(answer_page(&entry(&big), &"n".into(), count, 2048).is_none());
    }
}
