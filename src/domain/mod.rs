//! The domain: what the service is about, in types. A leaf: it depends on no other module of
//! this crate, and every other module may depend on it.
//!
//! Here live the ids (`CorpId`, `NotifyId`, `MsgId`, `DeliveryKey`), the events WeCom sends and
//! their kinds (each kind with its name, metric label and `notify_scene`), the application's ability
//! calls, the typed states of records, mailbox entries and jobs, the clock, and the `Dispatcher`
//! seam between the front door and the behaviour behind it. Nothing here does IO.

mod ability;
mod clock;
mod dispatch;
mod event;
mod ids;
mod state;

pub use ability::{Ability, AbilityCall, UNKNOWN_ABILITY, unknown_ability};
pub use clock::{Clock, unix_now};
pub use dispatch::{BoxFuture, DispatchError, Dispatcher};
pub use event::{
    ClassicEvent, ClassicEventKind, Event, EventKind, KnowledgeBaseChange, PullRequest, ZoneEvent, ZoneEventKind,
};
pub use ids::{CorpId, DeliveryKey, MsgId, NotifyId};
pub use state::{ContentStatus, DecryptStatus, JobState, MailboxState, MediaRef, MediaStatus, UnknownState};
