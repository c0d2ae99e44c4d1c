//! The dispatcher of the running service: what events and calls mean.
//!
//! Every event is kept in the mailbox before it is acknowledged; `conversation_new_message` and
//! `msgaudit_notify` also start a pull, whose summary their entry carries. Synchronous ability calls
//! are answered by `abilities`; asynchronous ones are kept as jobs and run in the background.

use std::sync::Arc;

use serde_json::Value;

use crate::abilities::{Abilities, JobRunner};
use crate::domain::{AbilityCall, BoxFuture, DeliveryKey, DispatchError, Dispatcher, Event};
use crate::ingest::PullScheduler;
use crate::mailbox::Mailbox;

pub struct ZoneService {
    scheduler: Arc<PullScheduler>,
    mailbox: Arc<Mailbox>,
    abilities: Arc<Abilities>,
    jobs: Arc<JobRunner>,
}

impl ZoneService {
    pub fn new(
        scheduler: Arc<PullScheduler>,
        mailbox: Arc<Mailbox>,
        abilities: Arc<Abilities>,
        jobs: Arc<JobRunner>,
    ) -> ZoneService {
        ZoneService { scheduler, mailbox, abilities, jobs }
    }
}

impl Dispatcher for ZoneService {
    fn accept_event(&self, event: Event, delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let entry = self
                .mailbox
                .keep_event(&event, delivery.as_bytes())
                .await
                .map_err(|error| DispatchError(error.to_string()))?;
            let Some(entry) = entry else {
                tracing::info!("event delivered again after a restart; kept once");
                return Ok(());
            };
            tracing::info!(corp_id = %event.corp_id(), kind = %event.kind(), "event kept");
            if let Some(pull) = event.pull_request() {
                self.scheduler.trigger(event.corp_id(), pull.token, Some(entry));
            }
            Ok(())
        })
    }

    fn call_ability(&self, call: AbilityCall) -> BoxFuture<'_, Value> {
        Box::pin(async move { self.abilities.call(&call).await })
    }

    fn accept_async_call(&self, call: AbilityCall, delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            self.jobs.accept(&call, &delivery).await.map_err(|error| DispatchError(error.to_string()))?;
            tracing::info!(ability_id = %call.ability_id, "async call kept as a job");
            Ok(())
        })
    }
}
