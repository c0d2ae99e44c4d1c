//! The dispatcher of the running service: what events and calls mean.
//!
//! `conversation_new_message` (zone) and `msgaudit_notify` (classic) start a pull for their corp;
//! other events are recorded in the log by kind. Abilities are not built yet: every call is
//! answered 710636.

use std::sync::Arc;

use serde_json::Value;

use crate::inbound::{
    AbilityCall, BoxFuture, ClassicEventKind, DispatchError, Dispatcher, Event, ZoneEventKind, unknown_ability,
};
use crate::ingest::PullScheduler;

pub struct ZoneService {
    scheduler: Arc<PullScheduler>,
}

impl ZoneService {
    pub fn new(scheduler: Arc<PullScheduler>) -> ZoneService {
        ZoneService { scheduler }
    }
}

impl Dispatcher for ZoneService {
    fn accept_event(&self, event: Event) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            match &event {
                Event::Zone(zone) => match &zone.kind {
                    ZoneEventKind::ConversationNewMessage { token } => {
                        self.scheduler.trigger(&zone.corp_id, Some(token.clone()));
                    }
                    _ => tracing::info!(corp_id = %zone.corp_id, event_type = %zone.event_type, "zone event received"),
                },
                Event::Classic { corp_id, event } => match &event.kind {
                    ClassicEventKind::MsgauditNotify { .. } => {
                        self.scheduler.trigger(corp_id, None);
                    }
                    _ => {
                        tracing::info!(corp_id, msg_type = %event.msg_type, event = ?event.event, "classic event received")
                    }
                },
            }
            Ok(())
        })
    }

    fn call_ability(&self, call: AbilityCall) -> BoxFuture<'_, Value> {
        Box::pin(async move { unknown_ability(&call.ability_id) })
    }

    fn accept_async_call(&self, call: AbilityCall) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            tracing::warn!(ability_id = %call.ability_id, "async ability call acknowledged but not run: no abilities are built yet");
            Ok(())
        })
    }
}
