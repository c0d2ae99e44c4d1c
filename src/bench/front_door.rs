//! `wecom-zone bench front-door`: the real service and a bare axum handler side by side.
//!
//! Both listen on loopback in this process. The same keep-alive load (see `load`) drives each in
//! turn with the same request: a signed URL verification (GET) and a signed `msgaudit_notify`
//! callback in an XML envelope (POST), replayed, so after the first delivery every POST takes the
//! duplicate path. The bare handler returns a constant. Turns alternate (bare, service, bare,
//! service) so that drift of the machine hits both alike. Afterwards the service's `/metrics` must
//! show every replayed POST as a duplicate: the fast path did the whole job.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::BenchError;
use super::load::{drive, exchange};
use crate::config::Config;
use crate::crypto::WxBizMsgCrypt;
use crate::simulator::{Simulator, SimulatorConfig};

const CORP_ID: &str = "wwbenchfrontdoor01";
/// Each target is driven in turns of this length, alternating, so that drift of a shared machine
/// hits all four alike.
const TURN: Duration = Duration::from_millis(500);
const WARM_UP: Duration = Duration::from_millis(500);

/// Median requests per second of each target, and the median of the per-turn ratios (each
/// service turn against the bare turn just before it).
#[derive(Debug, Clone, Copy)]
pub struct FrontDoorReport {
    pub bare_get: f64,
    pub service_get: f64,
    pub bare_post: f64,
    pub service_post: f64,
    pub get_ratio: f64,
    pub post_ratio: f64,
}

pub async fn run(seconds: u64, connections: usize, out: &mut dyn Write) -> Result<FrontDoorReport, BenchError> {
    let setup = |error: &dyn std::fmt::Display| BenchError::Setup(error.to_string());
    let workdir = tempfile::tempdir().map_err(|e| setup(&e))?;
    let (private_pem, public_pem) = crate::crypto::generate_key_pair_pem().map_err(|e| setup(&e))?;
    let simulator =
        Simulator::start(SimulatorConfig::new(CORP_ID, 0, vec![(1, public_pem)])).await.map_err(|e| setup(&e))?;
    let config = service_config(&simulator, &workdir, &private_pem).map_err(|e| setup(&e))?;
    let service = crate::app::start(config).map_err(|e| setup(&e))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service_address = spawn_service(service, stopped.clone()).await.map_err(|e| setup(&e))?;
    let bare_address = spawn_bare(stopped).await.map_err(|e| setup(&e))?;

    let sim = simulator.config();
    let crypto = WxBizMsgCrypt::new(&sim.callback_token, &sim.encoding_aes_key).map_err(|e| setup(&e))?;
    let echostr = format!("bench-echo-{:016x}", rand::random::<u64>());
    let get = Arc::<[u8]>::from(verification_request(&crypto, &echostr));
    let post = Arc::<[u8]>::from(callback_request(&crypto));
    check_answers(service_address, &get, &post, &echostr).await?;

    let turns = (Duration::from_secs(seconds).as_millis() / TURN.as_millis()).max(1);
    let _ = writeln!(
        out,
        "front-door: {connections} keep-alive connections, {turns} alternating turns of {} ms per target",
        TURN.as_millis()
    );
    for (address, request) in targets(bare_address, service_address, &get, &post) {
        drive(address, request, connections, WARM_UP).await.map_err(|e| setup(&e))?;
    }
    // Rates per turn, per target; the report takes medians, which a burst of noise cannot move.
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut service_posts = 0;
    for _ in 0..turns {
        for (index, (address, request)) in targets(bare_address, service_address, &get, &post).into_iter().enumerate() {
            let report = drive(address, request, connections, TURN).await.map_err(|e| setup(&e))?;
            if report.failed > 0 {
                return Err(BenchError::Verify(format!("{} requests were not answered 200", report.failed)));
            }
            rates[index].push(report.rate());
            if index == 3 {
                service_posts += report.ok;
            }
        }
    }
    verify_duplicates(service_address, service_posts).await?;
    let _ = stop.send(true);

    let ratios = |bare: &[f64], service: &[f64]| -> Vec<f64> {
        bare.iter().zip(service).map(|(bare, service)| service / bare.max(f64::EPSILON)).collect()
    };
    let report = FrontDoorReport {
        bare_get: median(&rates[0]),
        service_get: median(&rates[1]),
        bare_post: median(&rates[2]),
        service_post: median(&rates[3]),
        get_ratio: median(&ratios(&rates[0], &rates[1])),
        post_ratio: median(&ratios(&rates[2], &rates[3])),
    };
    let _ = writeln!(out, "bare axum:  GET {:.0} req/s, POST {:.0} req/s", report.bare_get, report.bare_post);
    let _ = writeln!(out, "wecom-zone: GET {:.0} req/s, POST {:.0} req/s", report.service_get, report.service_post);
    let _ = writeln!(
        out,
        "front-door: GET {:.0} req/s = {:.2} of bare axum; POST {:.0} req/s = {:.2} of bare axum",
        report.service_get, report.get_ratio, report.service_post, report.post_ratio
    );
    Ok(report)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// `(address, request)` in the order bare GET, service GET, bare POST, service POST.
fn targets(bare: SocketAddr, service: SocketAddr, get: &Arc<[u8]>, post: &Arc<[u8]>) -> [(SocketAddr, Arc<[u8]>); 4] {
    [(bare, Arc::clone(get)), (service, Arc::clone(get)), (bare, Arc::clone(post)), (service, Arc::clone(post))]
}

fn service_config(
    simulator: &Simulator,
    workdir: &tempfile::TempDir,
    private_pem: &str,
) -> Result<Config, crate::config::ConfigError> {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = {storage:?}
[upstream]
base_url = "{base_url}"
[ingest]
poll_interval_s = 0
{corp}"#,
        storage = workdir.path().join("front-door.sqlite").display().to_string(),
        base_url = simulator.base_url(),
        corp = simulator.corp_toml(&[format!("{{ version = 1, pem = \"\"\"{private_pem}\"\"\" }}")]),
    );
    Config::from_toml_str(&text, Vec::new(), None)
}

async fn spawn_service(
    service: crate::app::Service,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(service.serve(listener, async move {
        let _ = stopped.changed().await;
    }));
    Ok(address)
}

async fn spawn_bare(mut stopped: tokio::sync::watch::Receiver<bool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(crate::http::serve_bare(listener, async move {
        let _ = stopped.changed().await;
    }));
    Ok(address)
}

/// `GET /?msg_signature&timestamp&nonce&echostr`, signed now (the run is far shorter than the
/// allowed clock skew).
fn verification_request(crypto: &WxBizMsgCrypt, echostr: &str) -> Vec<u8> {
    let sealed = seal(crypto, echostr);
    let echostr = percent_encoding::utf8_percent_encode(&sealed.encrypt, percent_encoding::NON_ALPHANUMERIC);
    format!(
        "GET /?msg_signature={}&timestamp={}&nonce={}&echostr={echostr} HTTP/1.1\r\nHost: bench\r\n\r\n",
        sealed.msg_signature, sealed.timestamp, sealed.nonce
    )
    .into_bytes()
}

/// `POST /` with a `msgaudit_notify` event in an XML envelope.
fn callback_request(crypto: &WxBizMsgCrypt) -> Vec<u8> {
    let sealed = seal(crypto, &crate::client::classic_event(CORP_ID, "msgaudit_notify"));
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt>\
         <AgentID><![CDATA[1000002]]></AgentID></xml>",
        sealed.encrypt
    );
    format!(
        "POST /?msg_signature={}&timestamp={}&nonce={} HTTP/1.1\r\nHost: bench\r\n\
         Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        sealed.msg_signature,
        sealed.timestamp,
        sealed.nonce,
        body.len()
    )
    .into_bytes()
}

fn seal(crypto: &WxBizMsgCrypt, plaintext: &str) -> crate::crypto::SealedReply {
    let timestamp = crate::domain::unix_now().to_string();
    let nonce = rand::random::<u32>().to_string();
    crypto.seal(rand::random(), plaintext.as_bytes(), CORP_ID.as_bytes(), &timestamp, &nonce)
}

/// The service answers the echostr and `success` before any load is applied.
async fn check_answers(
    service: SocketAddr,
    get: &Arc<[u8]>,
    post: &Arc<[u8]>,
    echostr: &str,
) -> Result<(), BenchError> {
    for (request, expected) in [(get, echostr), (post, "success")] {
        let (status, body) = exchange(service, request).await.map_err(|e| BenchError::Setup(e.to_string()))?;
        if status != 200 || body != expected.as_bytes() {
            return Err(BenchError::Verify(format!("the service did not answer `{expected}`")));
        }
    }
    Ok(())
}

/// Every replayed POST was counted as a duplicate delivery (the first one was processed).
async fn verify_duplicates(service: SocketAddr, replayed: u64) -> Result<(), BenchError> {
    let request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    let (_, metrics) = exchange(service, request).await.map_err(|e| BenchError::Setup(e.to_string()))?;
    let counted = String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|line| line.strip_prefix("wecom_zone_duplicate_deliveries_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // The warm-up turns replayed the POST too, so at least every measured one must be counted.
    if counted < replayed {
        return Err(BenchError::Verify(format!("{replayed} POSTs replayed but {counted} counted as duplicates")));
    }
    Ok(())
}
