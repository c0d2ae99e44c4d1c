//! A small keep-alive HTTP/1.1 load generator for `bench front-door`.
//!
//! Each connection sends one prepared request, reads the whole response (headers, then
//! `Content-Length` bytes), and sends the next, until the deadline. It runs on its own
//! single-threaded runtime on its own OS thread, so the server under test keeps its runtime to
//! itself and both targets are driven by exactly the same client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one run of the load did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadReport {
    /// Responses with status 200.
    pub ok: u64,
    /// Responses with any other status.
    pub failed: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Drives `address` with `connections` keep-alive connections sending `request` for `duration`.
/// Blocks the calling thread's async task only through the returned future: the load itself runs
/// on a dedicated thread.
pub async fn drive(
    address: SocketAddr,
    request: Arc<[u8]>,
    connections: usize,
    duration: Duration,
) -> std::io::Result<LoadReport> {
    let (done, report) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bench-load".into()).spawn(move || {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| runtime.block_on(run(address, request, connections, duration)));
        let _ = done.send(outcome);
    })?;
    report.await.map_err(|_| std::io::Error::other("the load thread stopped"))?
}

async fn run(
    address: SocketAddr,
    request: Arc<[u8]>,
    connections: usize,
    duration: Duration,
) -> std::io::Result<LoadReport> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        tasks.spawn(connection(address, Arc::clone(&request), deadline));
    }
    let mut report = LoadReport::default();
    while let Some(joined) = tasks.join_next().await {
        let (ok, failed) = joined.map_err(std::io::Error::other)??;
        report.ok += ok;
        report.failed += failed;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One keep-alive connection: `(ok, failed)` responses.
async fn connection(address: SocketAddr, request: Arc<[u8]>, deadline: Instant) -> std::io::Result<(u64, u64)> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(4096);
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < deadline {
        stream.write_all(&request).await?;
        if read_response(&mut stream, &mut buffer).await?.0 == 200 {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    Ok((ok, failed))
}

/// Sends one request on a fresh connection: the status and the body.
pub async fn exchange(address: SocketAddr, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let mut buffer = Vec::new();
    let (status, body_start) = read_response(&mut stream, &mut buffer).await?;
    Ok((status, buffer.split_off(body_start)))
}

/// Reads one response into `buffer` (reused between responses): its status and where its body
/// starts.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, usize)> {
    buffer.clear();
    let header_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buffer).await?;
    };
    let head = std::str::from_utf8(&buffer[..header_end]).map_err(|_| invalid("response head is not UTF-8"))?;
    let status = head.get(9..12).and_then(|code| code.parse().ok()).ok_or_else(|| invalid("no status code"))?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
        })
        .ok_or_else(|| invalid("the bench needs responses with Content-Length"))?;
    while buffer.len() < header_end + length {
        read_more(stream, buffer).await?;
    }
    Ok((status, header_end))
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
