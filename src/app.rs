//! Wiring: builds the service from a [`Config`] and runs it.
//!
//! `start` opens the store, loads every key, builds the upstream client, the RSA pool, the
//! ingestor and one pull loop per corp. `Service::serve` answers HTTP until the shutdown signal,
//! then stops the pull loops (a page being committed either commits whole or not at all).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::crypto::CryptoError;
use crate::inbound::{Dispatcher, FrontDoor};
use crate::ingest::{Ingestor, PullScheduler, Schedule};
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
    #[error("cannot open storage: {0}")]
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

    /// Ready when every corp's keys are loaded and the store answers.
    pub fn readiness(&self) -> Result<(), String> {
        if self.front_door.corp_count() != self.config.corps.len() || self.config.corps.is_empty() {
            return Err("callback keys are not loaded".to_owned());
        }
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
    pub scheduler: Arc<PullScheduler>,
    stop_pulls: watch::Sender<bool>,
    pull_tasks: Vec<JoinHandle<()>>,
}

/// The store and the ingestor for `config`, without HTTP or pull loops (the benchmark uses this).
pub fn build_ingestor(config: &Config, metrics: Arc<Metrics>) -> Result<(Arc<dyn Store>, Arc<Ingestor>), StartError> {
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
    let upstream = UpstreamClient::new(config, Arc::clone(&metrics))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.ingest.rsa_threads)
        .thread_name(|index| format!("rsa-{index}"))
        .build()
        .map_err(|error| StartError::Pool(error.to_string()))?;
    let ingestor =
        Arc::new(Ingestor::new(Arc::clone(&store), upstream, rings, Arc::new(pool), config.ingest.page_limit, metrics));
    Ok((store, ingestor))
}

/// Builds everything and starts the pull loops. Call inside a Tokio runtime.
pub fn start(config: Config) -> Result<Service, StartError> {
    let metrics = Arc::new(Metrics::new());
    let (store, ingestor) = build_ingestor(&config, Arc::clone(&metrics))?;
    let (stop_pulls, stopped) = watch::channel(false);
    let corp_ids: Vec<String> = config.corps.iter().map(|corp| corp.corp_id.clone()).collect();
    let schedule = Schedule {
        poll_interval: config.ingest.poll_interval,
        retry_delay: config.upstream.retry_max.max(Duration::from_millis(100)),
    };
    let (scheduler, pull_tasks) =
        PullScheduler::start(Arc::clone(&ingestor), &corp_ids, schedule, Arc::clone(&metrics), stopped);
    let dispatcher = Arc::new(ZoneService::new(Arc::clone(&scheduler)));
    let state = AppState::build(config, dispatcher, metrics, Some(store))?;
    Ok(Service { state, ingestor, scheduler, stop_pulls, pull_tasks })
}

impl Service {
    /// Serves HTTP on `listener` until `shutdown` completes, then stops the pull loops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = crate::http::serve(listener, Arc::clone(&self.state), shutdown).await;
        let _ = self.stop_pulls.send(true);
        for task in self.pull_tasks {
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
