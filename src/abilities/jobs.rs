//! Asynchronous ability calls: kept durably when they arrive, run in the background, their result
//! sent to `program_async_job_call_back` with the call's `job_info` until WeCom accepts it.
//! Jobs not yet delivered when the process stops resume at the next start.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Abilities;
use crate::background::{self, EntryRetry, Round, Worker};
use crate::domain::{AbilityCall, BoxFuture, Clock, DeliveryKey, JobState};
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::store::{Job, JobDelivery, JobStore, NewJob, StoreError, blocking};
use crate::upstream::UpstreamClient;

pub struct JobRunner {
    store: Arc<dyn JobStore>,
    abilities: Arc<Abilities>,
    upstream: UpstreamClient,
    mailbox: Arc<Mailbox>,
    wake: Arc<Notify>,
    clock: Clock,
    retry: EntryRetry,
    metrics: Arc<Metrics>,
}

/// Jobs run or delivered per round.
const JOB_BATCH: usize = 50;

impl JobRunner {
    pub fn new(
        store: Arc<dyn JobStore>,
        abilities: Arc<Abilities>,
        (upstream, mailbox): (UpstreamClient, Arc<Mailbox>),
        clock: Clock,
        retry: EntryRetry,
        metrics: Arc<Metrics>,
    ) -> JobRunner {
        JobRunner { store, abilities, upstream, mailbox, wake: Arc::new(Notify::new()), clock, retry, metrics }
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

    /// Runs and delivers the jobs that are due, each on its own retry schedule.
    async fn run_round(&self) -> Result<Round, StoreError> {
        let store = Arc::clone(&self.store);
        let now_ms = self.clock.now_ms();
        let jobs = blocking(move || store.jobs_due(now_ms, JOB_BATCH)).await?;
        let batch_was_full = jobs.len() == JOB_BATCH;
        for job in jobs {
            self.run_and_deliver(job).await?;
        }
        let store = Arc::clone(&self.store);
        let next_due = blocking(move || store.jobs_next_attempt()).await?;
        Ok(background::after_batch(batch_was_full, next_due, self.clock.now_ms()))
    }

    async fn run_and_deliver(&self, job: Job) -> Result<(), StoreError> {
        let (errcode, result) = match (&job.result, job.state) {
            (Some(result), state) if state != JobState::Pending => (job.errcode.unwrap_or(0), result.clone()),
            _ => self.execute(&job).await?,
        };
        let request = json!({"job_info": job.call.job_info, "errcode": errcode, "result": result});
        let outcome =
            self.upstream.invoke::<_, Value>(&job.call.corp_id, "program_async_job_call_back", &request).await;
        let delivery = match &outcome {
            Ok(_) => {
                tracing::info!(ability_id = %job.call.ability_id, "async result delivered");
                JobDelivery::Delivered
            }
            Err(error) => match self.retry.next_attempt(job.attempts + 1, self.clock.now_ms()) {
                Some(at_ms) => {
                    tracing::warn!(ability_id = %job.call.ability_id, %error, "program_async_job_call_back failed; retrying");
                    JobDelivery::RetryAt(at_ms)
                }
                None => {
                    self.metrics.dead_lettered("jobs");
                    tracing::error!(ability_id = %job.call.ability_id, %error, attempts = job.attempts + 1,
                        "program_async_job_call_back kept failing; the result is a dead letter (kept, no longer retried)");
                    JobDelivery::DeadLetter
                }
            },
        };
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        blocking(move || store.job_delivery_attempt(job.id, delivery, now)).await?;
        Ok(())
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
        let kept = self.mailbox.async_result_entry(
            &job.call.corp_id,
            job.id,
            &job.call.ability_id,
            &job.call.job_info,
            &output,
        );
        let store = Arc::clone(&self.store);
        let (id, stored_result, now) = (job.id, result.clone(), self.clock.now());
        blocking(move || store.job_finish(id, errcode, &stored_result, &kept, now)).await?;
        self.mailbox.wake().notify_one();
        Ok((errcode, result))
    }
}

/// The runner: runs pending jobs and delivers their results until WeCom accepts them.
impl Worker for JobRunner {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move { background::logged("async jobs", self.run_round().await) })
    }
}
