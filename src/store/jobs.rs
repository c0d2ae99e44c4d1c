//! The jobs aggregate: asynchronous ability calls and their results.

use super::{NewMailboxEntry, StoreError};
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
    /// Jobs not yet delivered and not dead letters, in the order they are due.
    fn jobs_unfinished(&self) -> Result<Vec<Job>, StoreError>;
    /// Jobs to run or deliver whose next attempt is due at `now_ms`, soonest first.
    fn jobs_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// When the next waiting job is due (Unix ms), if any waits.
    fn jobs_next_attempt(&self) -> Result<Option<i64>, StoreError>;
    /// Keeps a job's result and its mailbox entry in one transaction, so a crash keeps both or
    /// neither. Returns the mailbox entry's id when it was new.
    fn job_finish(
        &self,
        id: i64,
        errcode: i64,
        result: &str,
        kept: &NewMailboxEntry,
        now: i64,
    ) -> Result<Option<i64>, StoreError>;
    fn job_delivery_attempt(&self, id: i64, outcome: JobDelivery, now: i64) -> Result<(), StoreError>;
}

/// What became of one attempt to deliver a job's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDelivery {
    Delivered,
    /// Failed; try again at this Unix ms.
    RetryAt(i64),
    /// Failed for the last time.
    DeadLetter,
}
