//! The jobs aggregate: asynchronous ability calls and their results.

use super::StoreError;
use crate::domain::{CorpId, JobState, NotifyId};

/// An asynchronous ability call, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub corp_id: CorpId,
    pub agent_id: i64,
    pub ability_id: String,
    pub notify_id: NotifyId,
    pub job_info: String,
    pub request_data: String,
    pub delivery_key: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub call: NewJob,
    pub state: JobState,
    pub errcode: Option<i64>,
    pub result: Option<String>,
    pub attempts: i64,
}

pub trait JobStore: Send + Sync + 'static {
    /// Keeps an async call; `None` when its delivery key was seen before.
    fn job_insert(&self, job: &NewJob, now: i64) -> Result<Option<i64>, StoreError>;
    /// Jobs not yet delivered, oldest first.
    fn jobs_unfinished(&self) -> Result<Vec<Job>, StoreError>;
    fn job_set_result(&self, id: i64, errcode: i64, result: &str, now: i64) -> Result<(), StoreError>;
    fn job_delivery_attempt(&self, id: i64, delivered: bool, now: i64) -> Result<(), StoreError>;
}
