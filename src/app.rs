//! Wiring: builds the service from a [`Config`] and runs it.
//!
//! `start` opens the store, loads every key, builds the upstream client, the RSA pool, the
//! ingestor, the mailbox, the abilities and the background loops (one pull loop per corp, the
//! mailbox notifier, the async job runner). `Service::serve` answers HTTP until the shutdown
//! signal, then stops the loops (a page being committed either commits whole or not at all).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::abilities::{Abilities, JobRunner};
use crate::config::Config;
use crate::crypto::CryptoError;
use crate::inbound::{Dispatcher, FrontDoor};
use crate::ingest::{Ingestor, PullListener, PullScheduler, Schedule};
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::service::ZoneService;
use crate::store::{SqliteStore, Store, StoreError};
use crate::upstream::{UpstreamClient, UpstreamError};

/// Everything a request handler needs. Shared behind an `Arc`.
pub struct AppState {
    pub config: Config,
    pub front_door: FrontDoor,
    pub metrics: Arc<Metrics>,
    pub store: Option<Arc<dyn Store>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("corp {corp_id}: private key version {version}: {message}")]
    Key { corp_id: String, version: u32, message: String },
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("cannot start the RSA pool: {0}")]
    Pool(String),
}

impl AppState {
    /// The front door alone, with `dispatcher` behind it (tests use their own dispatchers).
    pub fn new(config: Config, dispatcher: Arc<dyn Dispatcher>) -> Result<Arc<AppState>, CryptoError> {
        Self::build(config, dispatcher, Arc::new(Metrics::new()), None)
    }

    fn build(
        config: Config,
        dispatcher: Arc<dyn Dispatcher>,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Arc<AppState>, CryptoError> {
        let front_door = FrontDoor::new(&config, dispatcher, Arc::clone(&metrics))?;
        Ok(Arc::new(AppState { config, front_door, metrics, store }))
    }

    /// Ready when the store answers. Every corp's keys are loaded by construction: `start` fails
    /// on any key that does not load, and the config requires at least one corp.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(store) = &self.store {
            store.check().map_err(|_| "storage is not available".to_owned())?;
        }
        Ok(())
    }
}

/// The whole service, started.
pub struct Service {
    pub state: Arc<AppState>,
    pub ingestor: Arc<Ingestor>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

/// The store and the ingestor for `config`, without HTTP or pull loops (the benchmark uses this).
/// `upstream` is shared with everything else that calls WeCom, so there is one token cache.
pub fn build_ingestor(
    config: &Config,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
) -> Result<(Arc<dyn Store>, Arc<Ingestor>), StartError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.storage.path)?);
    let mut rings = HashMap::new();
    for corp in &config.corps {
        let ring = corp.key_ring(config.ingest.rsa_padding).map_err(|(version, error)| StartError::Key {
            corp_id: corp.corp_id.clone(),
            version,
            message: error.to_string(),
        })?;
        rings.insert(corp.corp_id.clone(), Arc::new(ring));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.ingest.rsa_threads)
        .thread_name(|index| format!("rsa-{index}"))
        .build()
        .map_err(|error| StartError::Pool(error.to_string()))?;
    let ingestor =
        Arc::new(Ingestor::new(Arc::clone(&store), upstream, rings, Arc::new(pool), config.ingest.page_limit, metrics));
    Ok((store, ingestor))
}

/// Builds everything and starts the background loops (pulls, notifications, async jobs).
/// Call inside a Tokio runtime.
pub fn start(config: Config) -> Result<Service, StartError> {
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics))?;
    let (store, ingestor) = build_ingestor(&config, upstream.clone(), Arc::clone(&metrics))?;
    let retry_delay = config.upstream.retry_max.max(Duration::from_millis(100));
    let mailbox = Arc::new(Mailbox::new(
        Arc::clone(&store),
        upstream.clone(),
        config.mailbox.ttl,
        config.mailbox.max_answer_bytes,
        retry_delay,
    ));
    let abilities = Arc::new(Abilities::new(
        Arc::clone(&store),
        upstream.clone(),
        Arc::clone(&mailbox),
        config.abilities.invoke_apis.clone(),
    ));
    let jobs = Arc::new(JobRunner::new(
        Arc::clone(&store),
        Arc::clone(&abilities),
        upstream,
        Arc::clone(&mailbox),
        retry_delay,
    ));
    let (stop_background, stopped) = watch::channel(false);
    let mut corps = Vec::new();
    for corp in &config.corps {
        corps.push((corp.corp_id.clone(), mailbox.awaiting_pull(&corp.corp_id)?));
    }
    let schedule = Schedule { poll_interval: config.ingest.poll_interval, retry_delay };
    let listener: Arc<dyn PullListener> = Arc::clone(&mailbox) as Arc<dyn PullListener>;
    let (scheduler, mut background) =
        PullScheduler::start(Arc::clone(&ingestor), corps, schedule, listener, Arc::clone(&metrics), stopped.clone());
    background.push(tokio::spawn(Arc::clone(&mailbox).run_notifier(stopped.clone())));
    background.push(tokio::spawn(Arc::clone(&jobs).run(stopped)));
    let dispatcher = Arc::new(ZoneService::new(scheduler, mailbox, abilities, jobs));
    let state = AppState::build(config, dispatcher, metrics, Some(store))?;
    Ok(Service { state, ingestor, stop_background, background })
}

impl Service {
    /// Serves HTTP on `listener` until `shutdown` completes, then stops the pull loops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = crate::http::serve(listener, Arc::clone(&self.state), shutdown).await;
        let _ = self.stop_background.send(true);
        for task in self.background {
            let _ = task.await;
        }
        served
    }
}

/// Binds `server.listen` and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let service = start(config)?;
    let listener = TcpListener::bind(service.state.config.server.listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        corps = service.state.config.corps.len(),
        storage = %service.state.config.storage.path.display(),
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
