//! Asynchronous ability calls: kept durably when they arrive, run in the background, their result
//! sent to `program_async_job_call_back` with the call's `job_info` until WeCom accepts it.
//! Jobs not yet delivered when the process stops resume at the next start.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::Abilities;
use crate::inbound::{AbilityCall, unix_now};
use crate::mailbox::Mailbox;
use crate::store::{JOB_PENDING, Job, NewJob, Store, StoreError, blocking};
use crate::upstream::UpstreamClient;

pub struct JobRunner {
    store: Arc<dyn Store>,
    abilities: Arc<Abilities>,
    upstream: UpstreamClient,
    mailbox: Arc<Mailbox>,
    retry_delay: Duration,
    wake: Notify,
}

impl JobRunner {
    pub fn new(
        store: Arc<dyn Store>,
        abilities: Arc<Abilities>,
        upstream: UpstreamClient,
        mailbox: Arc<Mailbox>,
        retry_delay: Duration,
    ) -> JobRunner {
        JobRunner { store, abilities, upstream, mailbox, retry_delay, wake: Notify::new() }
    }

    /// Keeps the call (once per delivery) and wakes the runner.
    pub async fn accept(&self, call: &AbilityCall, delivery_key: &[u8]) -> Result<(), StoreError> {
        let job = NewJob {
            corp_id: call.corp_id.clone(),
            agent_id: call.agent_id,
            ability_id: call.ability_id.clone(),
            notify_id: call.notify_id.clone(),
            job_info: call.job_info.clone(),
            request_data: call.request_data.clone(),
            delivery_key: Some(delivery_key.to_vec()),
        };
        let store = Arc::clone(&self.store);
        let inserted = blocking(move || store.job_insert(&job, unix_now())).await?;
        if inserted.is_some() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs and delivers jobs until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let all_delivered = match self.round().await {
                Ok(all_delivered) => all_delivered,
                Err(error) => {
                    tracing::warn!(%error, "async jobs round failed");
                    false
                }
            };
            let wait = async {
                if all_delivered {
                    self.wake.notified().await;
                } else {
                    tokio::time::sleep(self.retry_delay).await;
                }
            };
            tokio::select! {
                () = wait => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs every pending job and delivers every result; true when nothing is left undelivered.
    async fn round(&self) -> Result<bool, StoreError> {
        let store = Arc::clone(&self.store);
        let jobs = blocking(move || store.jobs_unfinished()).await?;
        let mut all_delivered = true;
        for job in jobs {
            if !self.run_and_deliver(job).await? {
                all_delivered = false;
            }
        }
        Ok(all_delivered)
    }

    async fn run_and_deliver(&self, job: Job) -> Result<bool, StoreError> {
        let (errcode, result) = match (&job.result, job.state.as_str()) {
            (Some(result), state) if state != JOB_PENDING => (job.errcode.unwrap_or(0), result.clone()),
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
        blocking(move || store.job_delivery_attempt(job.id, delivered, unix_now())).await?;
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
        let (id, stored_result) = (job.id, result.clone());
        blocking(move || store.job_set_result(id, errcode, &stored_result, unix_now())).await?;
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
