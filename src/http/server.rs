//! The accept loop. `axum::serve` reads headers without a deadline, accepts without a limit and,
//! at shutdown, waits for every connection however slow; this loop bounds all three:
//!
//! - a connection must send each request's headers within `header_read_timeout` (which also
//!   closes a keep-alive connection idle that long), so trickling sockets cost a timer each and
//!   then nothing;
//! - at most `max_connections` are served; one more is closed as soon as it is accepted;
//! - at shutdown the listener closes, every connection is asked to finish its request and close,
//!   and after `shutdown_grace` whatever is left is dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::metrics::{Metrics, OpenConnection};

/// What bounds the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains within the grace.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Closing at once costs the peer a reconnect; keeping it would cost a slot.
                    metrics.connection_refused();
                    continue;
                };
                let open = (slot, metrics.open_connection());
                connections.spawn(serve_connection(stream, router.clone(), limits.header_read_timeout, stop.clone(), open));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(open = connections.len(), "closing connections still open after the shutdown grace");
    }
    connections.shutdown().await;
    Ok(())
}

/// The accepted socket, or `None` after an error that concerns one connection (the peer reset it)
/// or the process (out of file descriptors: pause, so the loop does not spin).
async fn accepted_stream(accepted: std::io::Result<(TcpStream, std::net::SocketAddr)>) -> Option<TcpStream> {
    match accepted {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(error) => {
            if !matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::Interrupted
            ) {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: (OwnedSemaphorePermit, OpenConnection),
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut router = router.clone();
        async move {
            let response = tower_service::Service::call(&mut router, request.map(Body::new)).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
