//! Asynchronous ability calls: kept durably when they arrive, run in the background, their result
//! sent to `program_async_job_call_back` with the call's `job_info` until WeCom accepts it.
//! Jobs not yet delivered when the process stops resume at the next start.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Abilities;
use crate::background::{self, Round, Worker};
use crate::domain::{AbilityCall, BoxFuture, Clock, DeliveryKey, JobState};
use crate::mailbox::Mailbox;
use crate::store::{Job, JobStore, NewJob, StoreError, blocking};
use crate::upstream::UpstreamClient;

pub struct JobRunner {
    store: Arc<dyn JobStore>,
    abilities: Arc<Abilities>,
    upstream: UpstreamClient,
    mailbox: Arc<Mailbox>,
    wake: Arc<Notify>,
    clock: Clock,
}

impl JobRunner {
    pub fn new(
        store: Arc<dyn JobStore>,
        abilities: Arc<Abilities>,
        upstream: UpstreamClient,
        mailbox: Arc<Mailbox>,
        clock: Clock,
    ) -> JobRunner {
        JobRunner { store, abilities, upstream, mailbox, wake: Arc::new(Notify::new()), clock }
    }

    /// What wakes the runner: a job was kept.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Keeps the call (once per delivery) and wakes the runner.
    pub async fn accept(&self, call: &AbilityCall, delivery: &DeliveryKey) -> Result<(), StoreError> {
        let job = NewJob {
            corp_id: call.corp_id.clone(),
            agent_id: call.agent_id,
            ability_id: call.ability_id.clone(),
            notify_id: call.notify_id.clone(),
            job_info: call.job_info.clone(),
            request_data: call.request_data.clone(),
            delivery_key: Some(delivery.as_bytes().to_vec()),
        };
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let inserted = blocking(move || store.job_insert(&job, now)).await?;
        if inserted.is_some() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs every pending job and delivers every result.
    async fn run_round(&self) -> Result<Round, StoreError> {
        let store = Arc::clone(&self.store);
        let jobs = blocking(move || store.jobs_unfinished()).await?;
        let mut all_delivered = true;
        for job in jobs {
            if !self.run_and_deliver(job).await? {
                all_delivered = false;
            }
        }
        Ok(if all_delivered { Round::Idle } else { Round::Failed })
    }

    async fn run_and_deliver(&self, job: Job) -> Result<bool, StoreError> {
        let (errcode, result) = match (&job.result, job.state) {
            (Some(result), state) if state != JobState::Pending => (job.errcode.unwrap_or(0), result.clone()),
            _ => self.execute(&job).await?,
        };
        let request = json!({"job_info": job.call.job_info, "errcode": errcode, "result": result});
        let outcome =
            self.upstream.invoke::<_, Value>(&job.call.corp_id, "program_async_job_call_back", &request).await;
        let delivered = outcome.is_ok();
        if let Err(error) = &outcome {
            tracing::warn!(ability_id = %job.call.ability_id, %error, "program_async_job_call_back failed; retrying");
        } else {
            tracing::info!(ability_id = %job.call.ability_id, "async result delivered");
        }
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        blocking(move || store.job_delivery_attempt(job.id, delivered, now)).await?;
        Ok(delivered)
    }

    /// Runs the ability, keeps the result (job row and mailbox) before any delivery attempt.
    async fn execute(&self, job: &Job) -> Result<(i64, String), StoreError> {
        let call = AbilityCall {
            corp_id: job.call.corp_id.clone(),
            agent_id: job.call.agent_id,
            ability_id: job.call.ability_id.clone(),
            notify_id: job.call.notify_id.clone(),
            job_info: job.call.job_info.clone(),
            is_async: true,
            request_data: job.call.request_data.clone(),
        };
        let output = self.abilities.call(&call).await;
        let errcode = output.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        let result = output.to_string();
        let store = Arc::clone(&self.store);
        let (id, stored_result, now) = (job.id, result.clone(), self.clock.now());
        blocking(move || store.job_set_result(id, errcode, &stored_result, now)).await?;
        if let Err(error) = self
            .mailbox
            .keep_async_result(&job.call.corp_id, job.id, &job.call.ability_id, &job.call.job_info, &output)
            .await
        {
            tracing::warn!(%error, "async result not kept in the mailbox");
        }
        Ok((errcode, result))
    }
}

/// The runner: runs pending jobs and delivers their results until WeCom accepts them.
impl Worker for JobRunner {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move { background::logged("async jobs", self.run_round().await) })
    }
}
