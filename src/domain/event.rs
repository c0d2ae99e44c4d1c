//! WeCom's events, classic (XML) and zone (JSON), and their kinds.
//!
//! [`EventKind`] is the one place that names a kind: its event type, its metric label and the
//! `notify_scene` its mailbox entry is announced with. Unknown events are kept, not rejected,
//! because WeCom adds event types over time and a zone program that refuses them loses data.

use std::fmt;

use serde_json::Value;

use super::ids::CorpId;

/// A WeCom event, classic or zone, for the corp it was addressed to.
#[derive(Debug, Clone)]
pub enum Event {
    Classic { corp_id: CorpId, event: ClassicEvent },
    Zone(ZoneEvent),
}

/// A classic XML event. `fields` keeps every top-level element, so nothing WeCom sent is lost;
/// it may contain message content and must not be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ClassicEvent {
    pub to_user_name: String,
    pub create_time: Option<i64>,
    pub msg_type: String,
    pub event: Option<String>,
    pub kind: ClassicEventKind,
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicEventKind {
    /// New classic archive data: start a pull.
    MsgauditNotify { agent_id: Option<String> },
    /// A notify id issued for this corp's app.
    ProgramNotify { notify_id: String, notify_scene: Option<i64> },
    /// `change_external_contact`, including `msg_audit_approved`.
    ChangeExternalContact { change_type: String, user_id: String, external_user_id: String },
    /// `change_contact` (member or department changes).
    ChangeContact { change_type: String, user_id: String },
    /// Any other event or message, kept in `fields`.
    Other,
}

/// A WeCom zone event (`call_type` 2): `event_type`, `timestamp` and one payload object.
#[derive(Clone, PartialEq)]
pub struct ZoneEvent {
    pub corp_id: CorpId,
    pub agent_id: i64,
    pub event_type: String,
    pub timestamp: i64,
    /// The payload, decoded where this version knows it.
    pub kind: ZoneEventKind,
    /// The event JSON as received.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneEventKind {
    ConversationNewMessage {
        token: String,
    },
    HitKeyword {
        token: String,
    },
    AuditApprovedSingle {
        userid: String,
        external_userid: String,
    },
    AuditApprovedRoom {
        external_userid: String,
        chatid: String,
    },
    KnowledgeBase {
        change: KnowledgeBaseChange,
        knowledge_base_id: String,
        knowledge_base_name: String,
    },
    KnowledgeBaseLearnDone {
        knowledge_base_id: String,
        knowledge_base_name: String,
        doc_id: i64,
        learn_status: i64,
    },
    ExportFinished {
        jobid: String,
    },
    /// An event type this version does not know, or a known one without its payload object.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnowledgeBaseChange {
    Authorised,
    Unauthorised,
    Deleted,
}

/// What kind of thing a mailbox entry holds: a known event, an async result, or another event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ConversationNewMessage,
    HitKeyword,
    AuditApprovedSingle,
    AuditApprovedRoom,
    AuthKnowledgeBase,
    UnauthKnowledgeBase,
    DeleteKnowledgeBase,
    KnowledgeBaseLearnDone,
    ExportFinished,
    MsgauditNotify,
    ChangeExternalContact,
    ChangeContact,
    /// The result of an asynchronous ability call.
    AsyncResult,
    /// A zone event type this version does not know.
    OtherZone,
    /// Any other classic event or message.
    OtherClassic,
}

/// `(kind, zone event_type)` for every zone event this version knows.
const ZONE_KINDS: [(EventKind, &str); 9] = [
    (EventKind::ConversationNewMessage, "conversation_new_message"),
    (EventKind::HitKeyword, "hit_keyword"),
    (EventKind::AuditApprovedSingle, "chat_archive_audit_approved_single"),
    (EventKind::AuditApprovedRoom, "chat_archive_audit_approved_room"),
    (EventKind::AuthKnowledgeBase, "auth_knowledge_base"),
    (EventKind::UnauthKnowledgeBase, "unauth_knowledge_base"),
    (EventKind::DeleteKnowledgeBase, "delete_knowledge_base"),
    (EventKind::KnowledgeBaseLearnDone, "knowledge_base_learn_done"),
    (EventKind::ExportFinished, "chat_archive_export_finished"),
];

impl EventKind {
    /// Every kind, for tables and tests.
    pub const ALL: [EventKind; 15] = [
        EventKind::ConversationNewMessage,
        EventKind::HitKeyword,
        EventKind::AuditApprovedSingle,
        EventKind::AuditApprovedRoom,
        EventKind::AuthKnowledgeBase,
        EventKind::UnauthKnowledgeBase,
        EventKind::DeleteKnowledgeBase,
        EventKind::KnowledgeBaseLearnDone,
        EventKind::ExportFinished,
        EventKind::MsgauditNotify,
        EventKind::ChangeExternalContact,
        EventKind::ChangeContact,
        EventKind::AsyncResult,
        EventKind::OtherZone,
        EventKind::OtherClassic,
    ];

    pub fn from_zone_event_type(event_type: &str) -> EventKind {
        ZONE_KINDS.iter().find(|(_, name)| *name == event_type).map_or(EventKind::OtherZone, |(kind, _)| *kind)
    }

    /// The event type as WeCom names it (`other_zone` and `other_classic` for the rest).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::MsgauditNotify => "msgaudit_notify",
            EventKind::ChangeExternalContact => "change_external_contact",
            EventKind::ChangeContact => "change_contact",
            EventKind::AsyncResult => "async_result",
            EventKind::OtherZone => "other_zone",
            EventKind::OtherClassic => "other_classic",
            zone => ZONE_KINDS.iter().find(|(kind, _)| *kind == zone).map_or("other_zone", |(_, name)| name),
        }
    }

    /// The label of the inbound metric: a bounded set, whatever WeCom sends.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::ConversationNewMessage => "zone:conversation_new_message",
            EventKind::HitKeyword => "zone:hit_keyword",
            EventKind::AuditApprovedSingle => "zone:chat_archive_audit_approved_single",
            EventKind::AuditApprovedRoom => "zone:chat_archive_audit_approved_room",
            EventKind::AuthKnowledgeBase => "zone:auth_knowledge_base",
            EventKind::UnauthKnowledgeBase => "zone:unauth_knowledge_base",
            EventKind::DeleteKnowledgeBase => "zone:delete_knowledge_base",
            EventKind::KnowledgeBaseLearnDone => "zone:knowledge_base_learn_done",
            EventKind::ExportFinished => "zone:chat_archive_export_finished",
            EventKind::MsgauditNotify => "classic:msgaudit_notify",
            EventKind::ChangeExternalContact => "classic:change_external_contact",
            EventKind::ChangeContact => "classic:change_contact",
            EventKind::AsyncResult => "async_result",
            EventKind::OtherZone => "zone:other",
            EventKind::OtherClassic => "classic:other",
        }
    }

    /// The `notify_scene` sent with `spec_notify_app` for entries of this kind (README table).
    pub fn scene(self) -> u8 {
        match self {
            EventKind::ConversationNewMessage => 1,
            EventKind::HitKeyword => 2,
            EventKind::AuditApprovedSingle => 3,
            EventKind::AuditApprovedRoom => 4,
            EventKind::AuthKnowledgeBase => 5,
            EventKind::UnauthKnowledgeBase => 6,
            EventKind::DeleteKnowledgeBase => 7,
            EventKind::KnowledgeBaseLearnDone => 8,
            EventKind::ExportFinished => 9,
            EventKind::MsgauditNotify => 20,
            EventKind::ChangeExternalContact => 21,
            EventKind::ChangeContact => 22,
            EventKind::OtherClassic => 29,
            EventKind::AsyncResult => 50,
            EventKind::OtherZone => 99,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The pull an event asks for; `token` is `conversation_new_message`'s, passed to `sync_msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub token: Option<String>,
}

impl Event {
    pub fn corp_id(&self) -> &CorpId {
        match self {
            Event::Classic { corp_id, .. } => corp_id,
            Event::Zone(zone) => &zone.corp_id,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Classic { event, .. } => event.event_kind(),
            Event::Zone(zone) => zone.event_kind(),
        }
    }

    /// The type as WeCom sent it, kept with the mailbox entry: the kind's name, the zone
    /// `event_type` of an unknown zone event, `classic:<Event or MsgType>` of another classic one.
    pub fn type_name(&self) -> String {
        match (self.kind(), self) {
            (EventKind::OtherZone, Event::Zone(zone)) => zone.event_type.clone(),
            (EventKind::OtherClassic, Event::Classic { event, .. }) => {
                format!("classic:{}", event.event.as_deref().unwrap_or(&event.msg_type))
            }
            (kind, _) => kind.name().to_owned(),
        }
    }

    /// The pull this event starts, if any: `conversation_new_message` (with its token) and classic
    /// `msgaudit_notify`. Its mailbox entry waits for that pull and carries its summary.
    pub fn pull_request(&self) -> Option<PullRequest> {
        match self {
            Event::Zone(zone) => match &zone.kind {
                ZoneEventKind::ConversationNewMessage { token } => Some(PullRequest { token: Some(token.clone()) }),
                _ => None,
            },
            Event::Classic { event, .. } => {
                matches!(event.kind, ClassicEventKind::MsgauditNotify { .. }).then_some(PullRequest { token: None })
            }
        }
    }
}

impl ClassicEvent {
    pub fn event_kind(&self) -> EventKind {
        match self.kind {
            ClassicEventKind::MsgauditNotify { .. } => EventKind::MsgauditNotify,
            ClassicEventKind::ChangeExternalContact { .. } => EventKind::ChangeExternalContact,
            ClassicEventKind::ChangeContact { .. } => EventKind::ChangeContact,
            ClassicEventKind::ProgramNotify { .. } | ClassicEventKind::Other => EventKind::OtherClassic,
        }
    }
}

impl ZoneEvent {
    pub fn event_kind(&self) -> EventKind {
        EventKind::from_zone_event_type(&self.event_type)
    }
}

// Debug impls name the kind of value and never its content.
impl fmt::Debug for ClassicEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClassicEvent {{ msg_type: {:?}, event: {:?}, kind: {:?} }}", self.msg_type, self.event, self.kind)
    }
}

impl fmt::Debug for ZoneEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZoneEvent {{ corp_id: {:?}, event_type: {:?} }}", self.corp_id, self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_distinct_per_kind_and_names_round_trip() {
        let mut scenes: Vec<u8> = EventKind::ALL.iter().map(|kind| kind.scene()).collect();
        scenes.sort_unstable();
        scenes.dedup();
        assert_eq!(scenes.len(), EventKind::ALL.len());
        for (kind, name) in ZONE_KINDS {
            assert_eq!(EventKind::from_zone_event_type(name), kind);
            assert_eq!(kind.name(), name);
            assert_eq!(kind.label(), format!("zone:{name}"));
        }
        assert_eq!(EventKind::from_zone_event_type("something_new"), EventKind::OtherZone);
        assert_eq!(EventKind::OtherZone.scene(), 99);
    }
}
