//! The HTTP surface on port 8080. The only module that knows axum.
//!
//! Routes: `GET|POST /` and `GET|POST /callback/{corp_id}` (callbacks), `/healthz`, `/readyz`,
//! `/metrics`. Bodies are read up to `server.body_limit_bytes` (413 beyond), every request is
//! bounded by `server.request_timeout_ms` (408 beyond), and every answer is counted by route and
//! status.

mod error;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::app::AppState;
use crate::inbound::Reply;

type SharedState = Arc<AppState>;

/// The router with every route and layer, for tests that drive it without a socket.
pub fn router(state: SharedState) -> Router {
    let timeout = state.config.server.request_timeout;
    let body_limit = state.config.server.body_limit_bytes;
    Router::new()
        .route("/", get(verify_url).post(receive))
        .route("/callback/{corp_id}", get(verify_url_for_corp).post(receive_for_corp))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), record_request))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves on an already-bound listener until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// A bare axum server whose handlers return constants: the yardstick of `bench front-door`.
pub async fn serve_bare(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().route("/", get(|| async { "ok" }).post(|| async { "success" }));
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// A bare axum server whose handlers return constants: the yardstick of `bench front-door`.
pub async fn serve_bare(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().route("/", get(|| async { "ok" }).post(|| async { "success" }));
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining requests");
}

async fn verify_url(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Ok(render(state.front_door.verify_url(None, query.as_deref())?))
}

async fn verify_url_for_corp(
    State(state): State<SharedState>,
    Path(corp_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Ok(render(state.front_door.verify_url(Some(&corp_id), query.as_deref())?))
}

async fn receive(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body, &state)?;
    Ok(render(state.front_door.receive(None, query.as_deref(), &body).await?))
}

async fn receive_for_corp(
    State(state): State<SharedState>,
    Path(corp_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body, &state)?;
    Ok(render(state.front_door.receive(Some(&corp_id), query.as_deref(), &body).await?))
}

/// A body over `server.body_limit_bytes` (enforced by `DefaultBodyLimit`) is 413.
fn body_or_error(body: Result<Bytes, BytesRejection>, state: &AppState) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::BodyTooLarge { limit: state.config.server.body_limit_bytes }
        }
        _ => ApiError::BodyUnreadable,
    })
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

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<SharedState>) -> Response {
    match state.readiness() {
        Ok(()) => "ready".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(state): State<SharedState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Counts every answer by route template (never the raw path, whose corp id is unbounded).
async fn record_request(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
