//! Wiring: builds the service state from a [`Config`] and a [`Dispatcher`], and runs it.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::crypto::CryptoError;
use crate::inbound::{Dispatcher, FrontDoor};
use crate::metrics::Metrics;

/// Everything a request handler needs. Cheap to share behind an `Arc`.
pub struct AppState {
    pub config: Config,
    pub front_door: FrontDoor,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(config: Config, dispatcher: Arc<dyn Dispatcher>) -> Result<Arc<AppState>, CryptoError> {
        let metrics = Arc::new(Metrics::new());
        let front_door = FrontDoor::new(&config, dispatcher, Arc::clone(&metrics))?;
        Ok(Arc::new(AppState { config, front_door, metrics }))
    }

    /// Ready when every corp's keys are loaded. Later stages add their own conditions (storage).
    pub fn readiness(&self) -> Result<(), String> {
        if self.front_door.corp_count() == self.config.corps.len() && self.front_door.corp_count() > 0 {
            Ok(())
        } else {
            Err("callback keys are not loaded".to_owned())
        }
    }
}

/// Binds `config.server.listen` and serves until `shutdown` completes.
pub async fn run(state: Arc<AppState>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let listener = TcpListener::bind(state.config.server.listen).await?;
    tracing::info!(address = %listener.local_addr()?, corps = state.config.corps.len(), "listening");
    crate::http::serve(listener, state, shutdown).await
}
