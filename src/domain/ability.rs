//! The application's calls of our abilities (`call_type` 1), and which abilities exist.

use std::fmt;

use serde_json::{Value, json};

use super::ids::{CorpId, NotifyId};

/// WeCom's errcode for an ability id that no program handler serves.
pub const UNKNOWN_ABILITY: i64 = 710636;

/// An application's call of one of our abilities.
#[derive(Clone, PartialEq, Eq)]
pub struct AbilityCall {
    pub corp_id: CorpId,
    pub agent_id: i64,
    pub ability_id: String,
    pub notify_id: NotifyId,
    pub job_info: String,
    pub is_async: bool,
    /// The application's `request_data`, a JSON document as text (not parsed here).
    pub request_data: String,
}

/// The abilities this service provides, by `ability_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ability<'a> {
    GetCallbackData,
    ListMessages,
    GetMessage,
    ListConversations,
    IngestStatus,
    /// A classic archive message's media file, in ranges.
    GetMedia,
    /// Full-text search over classic archive content.
    SearchMessages,
    /// `invoke_<api>`: a pass-through to WeCom's API `<api>` (allowed or not is config's call).
    Invoke(&'a str),
    Unknown(&'a str),
}

impl<'a> Ability<'a> {
    pub fn parse(ability_id: &'a str) -> Ability<'a> {
        match ability_id {
            "get_callback_data" => Ability::GetCallbackData,
            "list_messages" => Ability::ListMessages,
            "get_message" => Ability::GetMessage,
            "list_conversations" => Ability::ListConversations,
            "ingest_status" => Ability::IngestStatus,
            "get_media" => Ability::GetMedia,
            "search_messages" => Ability::SearchMessages,
            other => match other.strip_prefix("invoke_") {
                Some(api) if !api.is_empty() => Ability::Invoke(api),
                _ => Ability::Unknown(other),
            },
        }
    }

    /// The label of the inbound metric: a bounded set, whatever the caller sends.
    pub fn label(self) -> &'static str {
        match self {
            Ability::GetCallbackData => "ability:get_callback_data",
            Ability::ListMessages => "ability:list_messages",
            Ability::GetMessage => "ability:get_message",
            Ability::ListConversations => "ability:list_conversations",
            Ability::IngestStatus => "ability:ingest_status",
            Ability::GetMedia => "ability:get_media",
            Ability::SearchMessages => "ability:search_messages",
            Ability::Invoke(_) => "ability:invoke",
            Ability::Unknown(_) => "ability:other",
        }
    }
}

impl AbilityCall {
    pub fn ability(&self) -> Ability<'_> {
        Ability::parse(&self.ability_id)
    }
}

// Debug names the ability, never the request.
impl fmt::Debug for AbilityCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AbilityCall {{ ability_id: {:?}, is_async: {} }}", self.ability_id, self.is_async)
    }
}

/// The answer for an ability this service does not provide.
pub fn unknown_ability(ability_id: &str) -> Value {
    json!({"errcode": UNKNOWN_ABILITY, "errmsg": format!("unknown ability_id {ability_id}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ability_ids_parse_into_a_bounded_set_of_labels() {
        assert_eq!(Ability::parse("list_messages"), Ability::ListMessages);
        assert_eq!(Ability::parse("invoke_search_msg"), Ability::Invoke("search_msg"));
        assert_eq!(Ability::parse("invoke_"), Ability::Unknown("invoke_"));
        assert_eq!(Ability::parse("x".repeat(100).as_str()).label(), "ability:other");
    }
}
