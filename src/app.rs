//! Wiring: builds the service from a [`Config`] and runs it.
//!
//! `start` opens the store, loads every key, builds the upstream client, the RSA pool, the
//! ingestor, the mailbox, the abilities and the background workers (one puller per corp, the
//! mailbox notifier, the async job runner, the media downloader and the search indexer for classic
//! corps, the readiness probe). `Service::serve` answers HTTP until the shutdown signal, then stops
//! the workers (a page being committed either commits whole or not at all).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::abilities::{Abilities, JobRunner};
use crate::background::{self, Backoff, Pace, Round, ShutdownSender, Worker};
use crate::config::{Archive, Config};
use crate::crypto::CryptoError;
use crate::domain::{BoxFuture, Clock, CorpId};
use crate::finance::{Supervisor, WorkerCorp, WorkerSettings};
use crate::ingest::{ArchiveSource, Ingestor, PullListener, PullScheduler};
use crate::mailbox::{Mailbox, MailboxPolicy};
use crate::media::{MediaFetcher, MediaFiles};
use crate::metrics::Metrics;
use crate::search::{Indexer, Search, SearchError};
use crate::service::ZoneService;
use crate::store::{SqliteStore, StoreError, StoreHealth, blocking};
use crate::upstream::{UpstreamClient, UpstreamError};

pub use crate::http::{AppState, Readiness};

/// How often readiness is checked against the store.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("corp {corp_id}: private key version {version}: {message}")]
    Key { corp_id: CorpId, version: u32, message: String },
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("finance SDK: {0}")]
    Finance(String),
    #[error("cannot start the RSA pool: {0}")]
    Pool(String),
    #[error("{0}")]
    Search(#[from] SearchError),
}

/// The whole service, started.
pub struct Service {
    pub state: Arc<AppState>,
    pub ingestor: Arc<Ingestor>,
    /// The store behind every aggregate (tests and the demo read it directly).
    pub store: Arc<SqliteStore>,
    config: Config,
    stop_background: ShutdownSender,
    background: Vec<JoinHandle<()>>,
    /// The finance SDK workers' supervisors, ended cleanly after the background work stops.
    finance_workers: Vec<Arc<Supervisor>>,
}

/// The store and the ingestor for `config`, without HTTP or workers (the benchmark uses this).
/// `upstream` is shared with everything else that calls WeCom, so there is one token cache.
pub fn build_ingestor(
    config: &Config,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
) -> Result<(Arc<SqliteStore>, Arc<Ingestor>), StartError> {
    let store = Arc::new(SqliteStore::open(&config.storage.path)?);
    let mut rings = HashMap::new();
    for corp in &config.corps {
        let ring = corp.key_ring(corp.rsa_padding(config.ingest.rsa_padding)).map_err(|(version, error)| {
            StartError::Key { corp_id: corp.corp_id.clone(), version, message: error.to_string() }
        })?;
        rings.insert(corp.corp_id.clone(), Arc::new(ring));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.ingest.rsa_threads)
        .thread_name(|index| format!("rsa-{index}"))
        .build()
        .map_err(|error| StartError::Pool(error.to_string()))?;
    let ingestor = Ingestor::new(
        Arc::clone(&store) as _,
        upstream,
        rings,
        Arc::new(pool),
        config.ingest.page_limit,
        Arc::clone(&metrics),
    );
    let ingestor = match archive_source(config, metrics)? {
        Some(source) => ingestor.with_archive(Arc::new(source)),
        None => ingestor,
    };
    Ok((store, Arc::new(ingestor)))
}

/// The finance SDK worker's supervisor and the corps it pulls for, when any corp is on the
/// classic archive.
fn archive_source(config: &Config, metrics: Arc<Metrics>) -> Result<Option<ArchiveSource>, StartError> {
    let Some((settings, corps)) = finance_workers(config)? else { return Ok(None) };
    let ids: HashSet<CorpId> = corps.iter().map(|corp| CorpId::from(corp.corp_id.as_str())).collect();
    let supervisor = Arc::new(Supervisor::new(settings, corps, metrics));
    Ok(Some(ArchiveSource::new(supervisor, ids, config.finance_sdk.page_limit)))
}

/// How to run finance workers and which corps they `Init`; `None` when no corp is on the
/// classic archive.
fn finance_workers(config: &Config) -> Result<Option<(WorkerSettings, Vec<WorkerCorp>)>, StartError> {
    let corps: Vec<WorkerCorp> = config
        .corps
        .iter()
        .filter_map(|corp| match &corp.archive {
            Archive::FinanceSdk { secret } => {
                Some(WorkerCorp { corp_id: corp.corp_id.to_string(), secret: secret.value.clone() })
            }
            Archive::Zone => None,
        })
        .collect();
    if corps.is_empty() {
        return Ok(None);
    }
    let finance = &config.finance_sdk;
    let library =
        finance.library.clone().ok_or_else(|| StartError::Finance("finance_sdk.library is not set".into()))?;
    let program = match &finance.worker {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|error| StartError::Finance(error.to_string()))?,
    };
    let settings = WorkerSettings {
        program,
        library,
        call_deadline: finance.call_deadline,
        respawn: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10) },
        proxy: finance.proxy.clone(),
        proxy_password: finance.proxy_password.value.clone(),
        timeout_s: finance.timeout_s,
    };
    Ok(Some((settings, corps)))
}

/// The media download worker (with a finance worker of its own, so downloads never wait on, or
/// delay, the message pull), when any corp is on the classic archive.
fn media_fetcher(
    config: &Config,
    store: &Arc<SqliteStore>,
    clock: &Clock,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<MediaFetcher>>, StartError> {
    let Some((settings, corps)) = finance_workers(config)? else { return Ok(None) };
    let supervisor = Arc::new(Supervisor::new(settings, corps, metrics));
    Ok(Some(Arc::new(MediaFetcher::new(
        Arc::clone(store) as _,
        supervisor,
        MediaFiles::new(&config.media.path),
        config.media.max_file_bytes,
        config.background.entry_retry(),
        clock.clone(),
    ))))
}

/// The full-text index of the classic archive's content, with this process as its writer, when
/// any corp is on the classic archive. Its indexer wakes on every content commit.
fn search_index(
    config: &Config,
    store: &Arc<SqliteStore>,
    ingestor: &Ingestor,
) -> Result<Option<Arc<Search>>, StartError> {
    let Some(wake) = ingestor.content_wake() else { return Ok(None) };
    let search = Search::open(&config.search.path, Arc::clone(store) as _, true)?;
    Ok(Some(Arc::new(search.with_wake(wake))))
}

/// The corps whose content is kept (and searchable).
fn content_corps(config: &Config) -> HashSet<CorpId> {
    config
        .corps
        .iter()
        .filter(|corp| matches!(corp.archive, Archive::FinanceSdk { .. }))
        .map(|corp| corp.corp_id.clone())
        .collect()
}

/// Builds everything and starts the background workers (pulls, notifications, async jobs,
/// readiness) on the system clock. Call inside a Tokio runtime.
pub fn start(config: Config) -> Result<Service, StartError> {
    start_with_clock(config, Clock::system())
}

/// [`start`] with a clock that tests can move.
pub fn start_with_clock(config: Config, clock: Clock) -> Result<Service, StartError> {
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics))?;
    let (store, ingestor) = build_ingestor(&config, upstream.clone(), Arc::clone(&metrics))?;
    let policy = MailboxPolicy {
        ttl: config.mailbox.ttl,
        max_answer_bytes: config.mailbox.max_answer_bytes,
        retry: config.background.entry_retry(),
    };
    let mailbox =
        Arc::new(Mailbox::new(Arc::clone(&store) as _, upstream.clone(), policy, clock.clone(), Arc::clone(&metrics)));
    let media = media_fetcher(&config, &store, &clock, Arc::clone(&metrics))?;
    let search = search_index(&config, &store, &ingestor)?;
    let abilities = Abilities::new(
        Arc::clone(&store) as _,
        upstream.clone(),
        Arc::clone(&mailbox),
        config.abilities.invoke_apis.clone(),
    );
    let abilities = match &media {
        Some(_) => abilities.with_media(Arc::clone(&store) as _, MediaFiles::new(&config.media.path)),
        None => abilities,
    };
    let abilities = Arc::new(abilities.with_search(search.clone(), content_corps(&config)));
    let jobs = Arc::new(JobRunner::new(
        Arc::clone(&store) as _,
        Arc::clone(&abilities),
        (upstream, Arc::clone(&mailbox)),
        clock.clone(),
        config.background.entry_retry(),
        Arc::clone(&metrics),
    ));
    let (stop_background, shutdown) = background::shutdown_channel();
    let backoff = Backoff { base: config.background.retry_base, max: config.background.retry_max };
    let corps: Vec<CorpId> = config.corps.iter().map(|corp| corp.corp_id.clone()).collect();
    let listener: Arc<dyn PullListener> = Arc::clone(&mailbox) as _;
    let pull_pace = Pace { idle: config.ingest.poll_interval, backoff };
    let (scheduler, mut tasks) =
        PullScheduler::start(Arc::clone(&ingestor), &corps, pull_pace, listener, Arc::clone(&metrics), &shutdown);
    let notifier_pace = Pace { idle: Some(mailbox.idle_interval()), backoff };
    tasks.push(background::spawn(Arc::clone(&mailbox) as _, mailbox.wake(), notifier_pace, shutdown.clone()));
    let mut finance_workers: Vec<Arc<Supervisor>> =
        ingestor.archive_source().map(|source| Arc::clone(source.supervisor())).into_iter().collect();
    if let Some(media) = media {
        finance_workers.push(Arc::clone(media.supervisor()));
        let media_pace = Pace { idle: Some(config.background.idle_poll), backoff };
        let wake = ingestor.media_wake().unwrap_or_default();
        tasks.push(background::spawn(media as _, wake, media_pace, shutdown.clone()));
    }
    if let Some(search) = search {
        let index_pace = Pace { idle: Some(config.background.idle_poll), backoff };
        let wake = search.wake();
        tasks.push(background::spawn(Arc::new(Indexer::new(search)), wake, index_pace, shutdown.clone()));
    }
    let jobs_pace = Pace { idle: Some(config.background.idle_poll), backoff };
    tasks.push(background::spawn(Arc::clone(&jobs) as _, jobs.wake(), jobs_pace, shutdown.clone()));
    let readiness = Arc::new(Readiness::new(true));
    let probe = ReadinessProbe { store: Arc::clone(&store) as _, readiness: Arc::clone(&readiness) };
    let probe_pace = Pace { idle: Some(READINESS_INTERVAL), backoff };
    tasks.push(background::spawn(Arc::new(probe), Arc::new(Notify::new()), probe_pace, shutdown));
    let dispatcher = Arc::new(ZoneService::new(scheduler, mailbox, abilities, jobs));
    let state = AppState::build(&config, dispatcher, metrics, readiness, clock)?;
    Ok(Service { state, ingestor, store, config, stop_background, background: tasks, finance_workers })
}

impl Service {
    /// Serves HTTP on `listener` until `shutdown` completes, then stops the background workers.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = crate::http::serve(listener, Arc::clone(&self.state), shutdown).await;
        self.stop_background.stop();
        for task in self.background {
            let _ = task.await;
        }
        for supervisor in &self.finance_workers {
            supervisor.shutdown().await;
        }
        served
    }
}

/// Checks the store off the runtime and keeps `/readyz`'s answer current.
struct ReadinessProbe {
    store: Arc<dyn StoreHealth>,
    readiness: Arc<Readiness>,
}

impl Worker for ReadinessProbe {
    fn round(&self) -> BoxFuture<'_, Round> {
        Box::pin(async move {
            let store = Arc::clone(&self.store);
            let ready = blocking(move || store.check()).await.is_ok();
            if ready != self.readiness.is_ready() {
                tracing::warn!(ready, "storage readiness changed");
            }
            self.readiness.set(ready);
            Round::Idle
        })
    }
}

/// Binds `server.listen` and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let service = start(config)?;
    let listener = TcpListener::bind(service.config.server.listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        corps = service.config.corps.len(),
        storage = %service.config.storage.path.display(),
        "listening"
    );
    service.serve(listener, shutdown).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A store whose health a test switches: one aggregate trait is small enough to fake.
    struct SwitchableHealth(AtomicBool);

    impl StoreHealth for SwitchableHealth {
        fn check(&self) -> Result<(), StoreError> {
            if self.0.load(Ordering::SeqCst) { Ok(()) } else { Err(StoreError::Database("disk gone".into())) }
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_store_without_a_request_touching_it() {
        let health = Arc::new(SwitchableHealth(AtomicBool::new(false)));
        let readiness = Arc::new(Readiness::new(true));
        let probe = ReadinessProbe { store: Arc::clone(&health) as _, readiness: Arc::clone(&readiness) };
        assert_eq!(probe.round().await, Round::Idle);
        assert!(!readiness.is_ready(), "a failing store makes the service unready");
        health.0.store(true, Ordering::SeqCst);
        probe.round().await;
        assert!(readiness.is_ready());
    }
}
