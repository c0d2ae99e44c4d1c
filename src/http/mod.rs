//! The HTTP surface on port 8080. The only module of ours that knows axum (the simulator, WeCom's
//! side, is the other).
//!
//! Routes: `GET|POST /` and `GET|POST /callback/{corp_id}` (callbacks), `/healthz`, `/readyz`,
//! `/metrics`. There are no middleware layers: a POST handler runs inside [`observed`], which
//! bounds the whole request (body included) by `server.request_timeout_ms` (408 beyond); handlers
//! that never wait (GETs) run inside [`answered`]; both count the answer by route template and
//! status. Bodies are read up to `server.body_limit_bytes` (413 beyond). A layer stack (trace,
//! timeout, metrics) cost a third of the front door's throughput; these two functions do the same
//! work for a fraction of it (README, performance).

mod body;
mod error;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::config::{Config, ServerConfig};
use crate::crypto::CryptoError;
use crate::domain::{Clock, Dispatcher};
use crate::inbound::{FrontDoor, Reply};
use crate::metrics::Metrics;

/// Everything a request handler needs. Shared behind an `Arc`.
pub struct AppState {
    pub front_door: FrontDoor,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub server: ServerConfig,
    /// Bytes of request bodies being read, all requests together.
    body_budget: body::BodyBudget,
}

impl AppState {
    /// The front door alone, with `dispatcher` behind it (tests use their own dispatchers).
    pub fn new(config: Config, dispatcher: Arc<dyn Dispatcher>) -> Result<Arc<AppState>, CryptoError> {
        Self::build(&config, dispatcher, Arc::new(Metrics::new()), Arc::new(Readiness::new(true)), Clock::system())
    }

    pub fn build(
        config: &Config,
        dispatcher: Arc<dyn Dispatcher>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        clock: Clock,
    ) -> Result<Arc<AppState>, CryptoError> {
        let front_door = FrontDoor::new(config, dispatcher, Arc::clone(&metrics), clock)?;
        let body_budget = body::BodyBudget::new(config.server.body_buffer_bytes);
        Ok(Arc::new(AppState { front_door, metrics, readiness, server: config.server.clone(), body_budget }))
    }
}

/// Whether the service can take work (`/readyz`). Kept up to date off the request path by
/// whoever owns the storage, so answering never touches it.
#[derive(Debug)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn new(ready: bool) -> Readiness {
        Readiness(AtomicBool::new(ready))
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

type SharedState = Arc<AppState>;

/// The route templates: the `route` label of the request metrics (never the raw path, whose corp
/// id is unbounded).
#[derive(Debug, Clone, Copy)]
enum Route {
    Root,
    Callback,
    Healthz,
    Readyz,
    Metrics,
    Unmatched,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Callback => "/callback/{corp_id}",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Unmatched => "unmatched",
        }
    }
}

/// The router with every route, for tests that drive it without a socket.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(verify_url).post(receive))
        .route("/callback/{corp_id}", get(verify_url_for_corp).post(receive_for_corp))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Serves on an already-bound listener until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = server::ConnectionLimits {
        max_connections: state.server.max_connections,
        header_read_timeout: state.server.header_read_timeout,
        shutdown_grace: state.server.shutdown_grace,
    };
    let metrics = Arc::clone(&state.metrics);
    server::run(listener, router(state), limits, metrics, shutdown).await
}

/// A bare axum server whose handlers return constants: the yardstick of `bench front-door`.
pub async fn serve_bare(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().route("/", get(|| async { "ok" }).post(|| async { "success" }));
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Runs one request's work within the request timeout, then counts its answer.
async fn observed(state: &AppState, route: Route, work: impl Future<Output = Result<Response, ApiError>>) -> Response {
    let started = Instant::now();
    let outcome = within(state.server.request_timeout, work).await.unwrap_or(Err(ApiError::Timeout));
    count(state, route, started, outcome)
}

/// Answers a request whose work never waits (no body, no storage): nothing for a timeout to
/// bound, so only the count.
fn answered(state: &AppState, route: Route, work: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    let started = Instant::now();
    count(state, route, started, work())
}

fn count(state: &AppState, route: Route, started: Instant, outcome: Result<Response, ApiError>) -> Response {
    let response = outcome.unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    state.metrics.http_request(route.label(), status, started.elapsed().as_secs_f64());
    tracing::debug!(route = route.label(), status, "answered");
    response
}

/// `work`'s output, or `None` when it takes longer than `limit`. Most requests finish in their
/// first poll; only one that has to wait (a slow body, storage) pays for a timer.
async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|context| match work.as_mut().poll(context) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match first {
        Some(output) => Some(output),
        None => tokio::time::timeout(limit, work).await.ok(),
    }
}

/// The query is read from the `Uri` (a shared buffer) rather than copied out by `RawQuery`.
async fn verify_url(State(state): State<SharedState>, uri: Uri) -> Response {
    answered(&state, Route::Root, || Ok(render(state.front_door.verify_url(None, uri.query())?)))
}

async fn verify_url_for_corp(State(state): State<SharedState>, Path(corp_id): Path<String>, uri: Uri) -> Response {
    answered(&state, Route::Callback, || Ok(render(state.front_door.verify_url(Some(&corp_id), uri.query())?)))
}

async fn receive(State(state): State<SharedState>, uri: Uri, body: Body) -> Response {
    observed(&state, Route::Root, async {
        let body = state.body_budget.read(body, state.server.body_limit_bytes).await?;
        Ok(render(state.front_door.receive(None, uri.query(), &body).await?))
    })
    .await
}

async fn receive_for_corp(
    State(state): State<SharedState>,
    Path(corp_id): Path<String>,
    uri: Uri,
    body: Body,
) -> Response {
    observed(&state, Route::Callback, async {
        let body = state.body_budget.read(body, state.server.body_limit_bytes).await?;
        Ok(render(state.front_door.receive(Some(&corp_id), uri.query(), &body).await?))
    })
    .await
}

fn render(reply: Reply) -> Response {
    match reply {
        Reply::Text(body) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from(body)).into_response(),
        Reply::Sealed { format, reply } => {
            let (content_type, body) = reply.render(format);
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    }
}

async fn healthz(State(state): State<SharedState>) -> Response {
    answered(&state, Route::Healthz, || Ok("ok".into_response()))
}

async fn readyz(State(state): State<SharedState>) -> Response {
    answered(&state, Route::Readyz, || {
        if state.readiness.is_ready() { Ok("ready".into_response()) } else { Err(ApiError::NotReady) }
    })
}

async fn metrics(State(state): State<SharedState>) -> Response {
    answered(&state, Route::Metrics, || {
        let text = state.metrics.render();
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
    })
}

async fn not_found(State(state): State<SharedState>) -> Response {
    answered(&state, Route::Unmatched, || Err(ApiError::NotFound))
}
