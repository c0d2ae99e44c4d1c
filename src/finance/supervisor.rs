//! The service's side of the finance worker: spawns `wecom-zone finance-worker`, initialises
//! every finance corp in it, and puts every SDK call under a deadline. A worker that dies, hangs
//! past the deadline or breaks the protocol is killed and replaced (with capped backoff), and the
//! call is tried once more in the fresh worker. For `DecryptData` the worker answers item by item,
//! so a crash is pinned on the item being decrypted: it is tried again in a fresh worker, and an
//! item that kills the worker twice is answered [`Decrypted::Crashed`] while the items after it
//! go on.
//!
//! Calls are serial per supervisor (the tokio mutex is held across the pipe's IO, which is async;
//! no thread blocks on it). The service keeps one supervisor for pulls and one for media, so a
//! long download never delays the message cursor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::protocol::{self, DecryptItem, Request, Response};
use super::{FinanceError, MediaChunk};
use crate::background::Backoff;
use crate::metrics::Metrics;

/// How to run workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The `wecom-zone` executable (it has the `finance-worker` command).
    pub program: PathBuf,
    /// `libWeWorkFinanceSdk_C.so`.
    pub library: PathBuf,
    /// A call (or one item of a batch) taking longer than this kills the worker.
    pub call_deadline: Duration,
    /// Waits between replacing workers that keep dying.
    pub respawn: Backoff,
    /// Passed to GetChatData / GetMediaData.
    pub proxy: String,
    pub proxy_password: SecretString,
    pub timeout_s: i32,
}

/// A corp the worker must `Init`.
#[derive(Clone)]
pub struct WorkerCorp {
    pub corp_id: String,
    pub secret: SecretString,
}

/// What `DecryptData` gave one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    Plaintext(Vec<u8>),
    /// The SDK's non-zero return code.
    Sdk(i32),
    /// The worker died (or hung) on this item twice.
    Crashed,
}

pub struct Supervisor {
    settings: WorkerSettings,
    corps: Vec<WorkerCorp>,
    slot: Mutex<Slot>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// Workers lost in a row; the next spawn waits the backoff for this many.
    losses: u32,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Init's return code per corp whose Init failed.
    init_failures: HashMap<String, i32>,
}

/// Why a worker was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// The pipe ended: the process died.
    Crash,
    Deadline,
    /// It answered something the protocol does not allow there.
    Protocol,
}

impl Loss {
    fn label(self) -> &'static str {
        match self {
            Loss::Crash => "crash",
            Loss::Deadline => "deadline",
            Loss::Protocol => "protocol",
        }
    }
}

impl Supervisor {
    pub fn new(settings: WorkerSettings, corps: Vec<WorkerCorp>, metrics: Arc<Metrics>) -> Supervisor {
        Supervisor { settings, corps, slot: Mutex::new(Slot::default()), metrics }
    }

    /// `GetChatData(seq, limit)`: the answer's JSON bytes.
    pub async fn get_chat_data(&self, corp_id: &str, seq: u64, limit: u32) -> Result<Vec<u8>, FinanceError> {
        let request = Request::GetChatData {
            corp_id: corp_id.to_owned(),
            seq,
            limit,
            proxy: self.settings.proxy.clone(),
            passwd: self.settings.proxy_password.expose_secret().to_owned(),
            timeout_s: self.settings.timeout_s,
        };
        match self.call_twice(corp_id, &request, "GetChatData").await? {
            Response::ChatData { rc: 0, data } => Ok(data),
            Response::ChatData { rc, .. } => Err(FinanceError::Sdk(rc)),
            other => Err(unexpected(&other)),
        }
    }

    /// `GetMediaData(indexbuf, sdkfileid)`: one chunk.
    pub async fn get_media_data(
        &self,
        corp_id: &str,
        sdkfileid: &str,
        indexbuf: &str,
    ) -> Result<MediaChunk, FinanceError> {
        let request = Request::GetMediaData {
            corp_id: corp_id.to_owned(),
            sdkfileid: sdkfileid.to_owned(),
            indexbuf: indexbuf.to_owned(),
            proxy: self.settings.proxy.clone(),
            passwd: self.settings.proxy_password.expose_secret().to_owned(),
            timeout_s: self.settings.timeout_s,
        };
        match self.call_twice(corp_id, &request, "GetMediaData").await? {
            Response::Media { rc: 0, data, outindexbuf, finished } => Ok(MediaChunk { data, outindexbuf, finished }),
            Response::Media { rc, .. } => Err(FinanceError::Sdk(rc)),
            other => Err(unexpected(&other)),
        }
    }

    /// The stand-in SDK's count of slices and media objects not yet freed (`None` for the real one).
    pub async fn live_allocations(&self) -> Result<Option<i64>, FinanceError> {
        match self.call_twice("", &Request::LiveAllocations, "live_allocations").await? {
            Response::LiveAllocations { live } => Ok(live),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the worker cleanly: its stdin closes, so it drops every corp's SDK (DestroySdk) and
    /// exits; one that has not exited within two seconds is killed.
    pub async fn shutdown(&self) {
        let Some(worker) = self.slot.lock().await.worker.take() else { return };
        let Worker { mut child, stdin, stdout, .. } = worker;
        drop(stdin);
        drop(stdout);
        if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The running worker's process id, if one runs (for the benchmark's memory figure).
    pub async fn worker_pid(&self) -> Option<u32> {
        self.slot.lock().await.worker.as_ref().and_then(|worker| worker.child.id())
    }

    /// `DecryptData` for every item, in order; one answer per item whatever the SDK does.
    pub async fn decrypt(&self, items: &[DecryptItem]) -> Result<Vec<Decrypted>, FinanceError> {
        let mut slot = self.slot.lock().await;
        let mut answers = Vec::with_capacity(items.len());
        let mut crashes_of_next = 0u32;
        while answers.len() < items.len() {
            let worker = self.ready_worker(&mut slot).await?;
            let remaining = Request::Decrypt { items: items[answers.len()..].to_vec() };
            let outcome =
                self.stream_decrypt(worker, &remaining, items.len(), &mut answers, &mut crashes_of_next).await;
            match outcome {
                Ok(()) => slot.losses = 0,
                Err(loss) => {
                    self.lose(&mut slot, loss).await;
                    crashes_of_next += 1;
                    if crashes_of_next >= 2 {
                        tracing::warn!(item = answers.len(), "DecryptData killed the finance worker twice; parked");
                        answers.push(Decrypted::Crashed);
                        crashes_of_next = 0;
                    }
                }
            }
        }
        Ok(answers)
    }

    /// Sends one `Decrypt` and collects answers until `Done`; an item answered resets the count of
    /// crashes pinned on the next one.
    async fn stream_decrypt(
        &self,
        worker: &mut Worker,
        request: &Request,
        total: usize,
        answers: &mut Vec<Decrypted>,
        crashes_of_next: &mut u32,
    ) -> Result<(), Loss> {
        self.send(worker, request).await?;
        loop {
            match self.receive(worker).await? {
                Response::Decrypted { rc, plaintext } if answers.len() < total => {
                    answers.push(if rc == 0 { Decrypted::Plaintext(plaintext) } else { Decrypted::Sdk(rc) });
                    *crashes_of_next = 0;
                }
                Response::Done if answers.len() == total => return Ok(()),
                _ => return Err(Loss::Protocol),
            }
        }
    }

    /// One request, one answer, tried in a second worker if the first is lost.
    async fn call_twice(&self, corp_id: &str, request: &Request, call: &'static str) -> Result<Response, FinanceError> {
        let mut slot = self.slot.lock().await;
        for _ in 0..2 {
            let worker = self.ready_worker(&mut slot).await?;
            if let Some(rc) = worker.init_failures.get(corp_id) {
                return Err(FinanceError::Init(*rc));
            }
            let exchanged = match self.send(worker, request).await {
                Ok(()) => self.receive(worker).await,
                Err(loss) => Err(loss),
            };
            match exchanged {
                Ok(Response::Refused { reason }) => return Err(FinanceError::Refused(reason)),
                Ok(response) => {
                    slot.losses = 0;
                    return Ok(response);
                }
                Err(loss) => self.lose(&mut slot, loss).await,
            }
        }
        Err(FinanceError::WorkerLost(call))
    }

    async fn send(&self, worker: &mut Worker, request: &Request) -> Result<(), Loss> {
        match tokio::time::timeout(self.settings.call_deadline, protocol::send(&mut worker.stdin, request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Loss::Crash),
            Err(_) => Err(Loss::Deadline),
        }
    }

    async fn receive(&self, worker: &mut Worker) -> Result<Response, Loss> {
        match tokio::time::timeout(self.settings.call_deadline, protocol::receive(&mut worker.stdout)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(protocol::ProtocolError::Io(_))) => Err(Loss::Crash),
            Ok(Err(_)) => Err(Loss::Protocol),
            Err(_) => Err(Loss::Deadline),
        }
    }

    /// Kills the current worker (if it still runs) and counts the loss.
    async fn lose(&self, slot: &mut Slot, loss: Loss) {
        if let Some(mut worker) = slot.worker.take() {
            let _ = worker.child.start_kill();
            let status = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
            tracing::warn!(reason = loss.label(), ?status, "finance worker lost; replacing it");
        }
        slot.losses = slot.losses.saturating_add(1);
        self.metrics.finance_worker_lost(loss.label());
    }

    /// The running worker, or a new one: spawned after the backoff its predecessors earned,
    /// `Ready`, and every corp initialised.
    async fn ready_worker<'s>(&self, slot: &'s mut Slot) -> Result<&'s mut Worker, FinanceError> {
        // A worker that died between calls is replaced before anything is pinned on the next call.
        let exited = slot.worker.as_mut().is_some_and(|worker| !matches!(worker.child.try_wait(), Ok(None)));
        if exited {
            self.lose(slot, Loss::Crash).await;
        }
        if slot.worker.is_none() {
            if slot.losses > 0 {
                tokio::time::sleep(self.settings.respawn.delay_at_least_base(slot.losses - 1)).await;
            }
            match self.spawn().await {
                Ok(worker) => slot.worker = Some(worker),
                Err(error) => {
                    slot.losses = slot.losses.saturating_add(1);
                    return Err(error);
                }
            }
        }
        slot.worker.as_mut().ok_or_else(|| FinanceError::Spawn("no worker".into()))
    }

    async fn spawn(&self) -> Result<Worker, FinanceError> {
        let mut child = Command::new(&self.settings.program)
            .arg("finance-worker")
            .arg("--library")
            .arg(&self.settings.library)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| FinanceError::Spawn(error.to_string()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(FinanceError::Spawn("no pipes".into()));
        };
        let mut worker = Worker { child, stdin, stdout: BufReader::new(stdout), init_failures: HashMap::new() };
        match self.receive(&mut worker).await {
            Ok(Response::Ready) => {}
            Ok(Response::Refused { reason }) => return Err(FinanceError::Library(reason)),
            Ok(_) | Err(_) => return Err(FinanceError::Spawn("the worker did not start".into())),
        }
        for corp in &self.corps {
            let init = Request::Init { corp_id: corp.corp_id.clone(), secret: corp.secret.expose_secret().to_owned() };
            let answer = match self.send(&mut worker, &init).await {
                Ok(()) => self.receive(&mut worker).await,
                Err(loss) => Err(loss),
            };
            match answer {
                Ok(Response::Inited { rc: 0 }) => {}
                Ok(Response::Inited { rc }) => {
                    worker.init_failures.insert(corp.corp_id.clone(), rc);
                }
                Ok(Response::Refused { reason }) => return Err(FinanceError::Refused(reason)),
                Ok(_) | Err(_) => return Err(FinanceError::Spawn("the worker died during Init".into())),
            }
        }
        Ok(worker)
    }
}

fn unexpected(response: &Response) -> FinanceError {
    FinanceError::Refused(format!("unexpected answer {response:?}"))
}
