//! The abilities the application calls (`call_type` 1), by `ability_id`.
//!
//! Inputs are validated (unknown or ill-typed fields: errcode 40058 naming the field); outputs carry
//! only the keys each ability declares in the README, because WeCom rejects output that does not
//! match the ability's registered protocol (790014). Every failure is an output
//! `{"errcode": N, "errmsg": ".."}`, never a transport error.

mod jobs;
mod media;
mod records;
mod search;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use jobs::JobRunner;
pub use search::NEEDS_FINANCE_SDK_MSG;

use crate::domain::{Ability, AbilityCall, CorpId, UNKNOWN_ABILITY, unix_now};
use crate::mailbox::{Fetched, INVALID_NOTIFY_ID, Mailbox};
use crate::media::MediaFiles;
use crate::search::Search;
use crate::store::{MediaStore, RecordStore, StoreError};
use crate::upstream::{UpstreamClient, UpstreamError};

/// WeCom's "invalid parameter", used for every input that does not validate.
pub const INVALID_PARAMETER: i64 = 40058;
/// WeCom's "system busy, retry".
pub(crate) const BUSY: i64 = -1;
/// WeCom's "bad msgid".
const UNKNOWN_MSGID: i64 = 710601;

/// A failed call, answered as `{"errcode", "errmsg"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbilityError {
    pub errcode: i64,
    pub errmsg: String,
}

impl AbilityError {
    pub fn invalid(message: impl Into<String>) -> AbilityError {
        AbilityError { errcode: INVALID_PARAMETER, errmsg: message.into() }
    }

    fn to_output(&self) -> Value {
        json!({"errcode": self.errcode, "errmsg": self.errmsg})
    }
}

impl From<StoreError> for AbilityError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "storage failed during an ability call");
        AbilityError { errcode: BUSY, errmsg: "storage unavailable, retry later".into() }
    }
}

impl From<UpstreamError> for AbilityError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Api { errcode, errmsg } => AbilityError { errcode, errmsg },
            other => {
                tracing::warn!(error = %other, "upstream failed during an ability call");
                AbilityError { errcode: BUSY, errmsg: "WeCom unavailable, retry later".into() }
            }
        }
    }
}

pub struct Abilities {
    store: Arc<dyn RecordStore>,
    upstream: UpstreamClient,
    mailbox: Arc<Mailbox>,
    invoke_apis: Vec<String>,
    /// The classic archive's media, when any corp uses it.
    media: Option<(Arc<dyn MediaStore>, MediaFiles)>,
    /// The full-text index, when any corp uses the classic archive.
    search: Option<Arc<Search>>,
    /// The corps on the classic archive: the only ones with content to search.
    content_corps: HashSet<CorpId>,
}

impl Abilities {
    pub fn new(
        store: Arc<dyn RecordStore>,
        upstream: UpstreamClient,
        mailbox: Arc<Mailbox>,
        invoke_apis: Vec<String>,
    ) -> Self {
        Abilities { store, upstream, mailbox, invoke_apis, media: None, search: None, content_corps: HashSet::new() }
    }

    /// Serves `get_media` from `store` and `files`.
    pub fn with_media(mut self, store: Arc<dyn MediaStore>, files: MediaFiles) -> Self {
        self.media = Some((store, files));
        self
    }

    /// Serves `search_messages` for `content_corps` from `search`.
    pub fn with_search(mut self, search: Option<Arc<Search>>, content_corps: HashSet<CorpId>) -> Self {
        self.search = search;
        self.content_corps = content_corps;
        self
    }

    /// Runs `call` and returns its output JSON (or `{errcode, errmsg}`).
    pub async fn call(&self, call: &AbilityCall) -> Value {
        match self.dispatch(call).await {
            Ok(output) => output,
            Err(error) => error.to_output(),
        }
    }

    async fn dispatch(&self, call: &AbilityCall) -> Result<Value, AbilityError> {
        match call.ability() {
            Ability::GetCallbackData => self.get_callback_data(call).await,
            Ability::ListMessages => records::list_messages(self.store(), call).await,
            Ability::GetMessage => records::get_message(self.store(), call).await,
            Ability::ListConversations => records::list_conversations(self.store(), call).await,
            Ability::IngestStatus => {
                let mut status = records::ingest_status(self.store(), call).await?;
                if let Some(search) = self.search.as_ref().filter(|_| self.content_corps.contains(&call.corp_id)) {
                    // Stored changes the search index has still to take in (all corps).
                    status["search_backlog"] = json!(search::backlog(Arc::clone(search)).await?);
                }
                Ok(status)
            }
            Ability::GetMedia => match &self.media {
                Some((store, files)) => media::get_media(Arc::clone(store), files, call).await,
                None => Err(AbilityError { errcode: UNKNOWN_MSGID, errmsg: "no corp here keeps media".into() }),
            },
            Ability::SearchMessages => match &self.search {
                Some(search) if self.content_corps.contains(&call.corp_id) => {
                    search::search_messages(Arc::clone(search), call).await
                }
                _ => Err(AbilityError {
                    errcode: search::NEEDS_FINANCE_SDK,
                    errmsg: search::NEEDS_FINANCE_SDK_MSG.into(),
                }),
            },
            Ability::Invoke(api) if self.invoke_apis.iter().any(|allowed| allowed == api) => {
                self.invoke(call, api).await
            }
            Ability::Invoke(_) | Ability::Unknown(_) => Err(AbilityError {
                errcode: UNKNOWN_ABILITY,
                errmsg: format!("unknown ability_id {}", call.ability_id),
            }),
        }
    }

    fn store(&self) -> Arc<dyn RecordStore> {
        Arc::clone(&self.store)
    }

    async fn get_callback_data(&self, call: &AbilityCall) -> Result<Value, AbilityError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Input {
            #[serde(default)]
            page: u32,
        }
        let input: Input = parse_input(&call.request_data)?;
        let invalid = || AbilityError { errcode: INVALID_NOTIFY_ID, errmsg: "invalid notify_id".into() };
        if call.notify_id.is_empty() {
            return Err(invalid());
        }
        match self.mailbox.fetch(&call.corp_id, &call.notify_id, input.page).await {
            Ok(Fetched::Found(answer)) => Ok(answer),
            Ok(Fetched::NotFound) => Err(invalid()),
            Err(error) => {
                tracing::error!(%error, "mailbox fetch failed");
                Err(AbilityError { errcode: BUSY, errmsg: "storage unavailable, retry later".into() })
            }
        }
    }

    /// `invoke_<api>`: WeCom's answer to the application's request, unchanged.
    async fn invoke(&self, call: &AbilityCall, api: &str) -> Result<Value, AbilityError> {
        let request: Value = parse_input(&call.request_data)?;
        let answer: Value = self.upstream.invoke_once(&call.corp_id, api, &request).await?;
        Ok(answer)
    }
}

/// Parses `request_data` (empty means `{}`) into `T`, naming the offending field on failure.
pub(crate) fn parse_input<T: DeserializeOwned>(request_data: &str) -> Result<T, AbilityError> {
    let text = if request_data.trim().is_empty() { "{}" } else { request_data };
    let value: Value =
        serde_json::from_str(text).map_err(|_| AbilityError::invalid("request_data is not valid JSON"))?;
    if !value.is_object() {
        return Err(AbilityError::invalid("request_data must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        if path == "." {
            AbilityError::invalid(format!("request_data: {inner}"))
        } else {
            AbilityError::invalid(format!("invalid field `{path}`: {inner}"))
        }
    })
}

/// Seconds since `time`, never negative.
pub(crate) fn age_of(time: i64) -> i64 {
    unix_now().saturating_sub(time).max(0)
}
