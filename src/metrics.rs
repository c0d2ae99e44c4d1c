//! Prometheus metrics, one registry per service instance (so tests can run several services in
//! one process without sharing counters).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

// Labels on the request path are static strings and integers: counting an answer allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CorpLabels {
    corp_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyFailureLabels {
    corp_id: String,
    reason: String,
    key_version: String,
}

type HistogramConstructor = fn() -> LatencyHistogram;

/// A latency histogram kept in atomics. prometheus-client's `Histogram` takes a mutex for every
/// observation, and both workers observe every request: the contended lock showed in the front
/// door's profile. Here observing is three relaxed atomic additions.
#[derive(Debug)]
struct LatencyHistogram {
    /// Upper bounds in seconds, ascending; `+Inf` is implied.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    fn new(bounds: impl Iterator<Item = f64>) -> LatencyHistogram {
        let bounds: Vec<f64> = bounds.collect();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        LatencyHistogram { bounds, buckets, sum_nanos: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    fn observe(&self, seconds: f64) {
        let index = self.bounds.iter().position(|bound| seconds <= *bound).unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        // Float-to-int `as` saturates; a negative or NaN duration counts as zero.
        self.sum_nanos.fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder accumulates them and writes `f64::INFINITY` as `+Inf`.
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// See [`Metrics::open_connection`].
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    // Registration happens once; encoding takes the lock only to read.
    registry: Mutex<Registry>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, LatencyHistogram, HistogramConstructor>,
    decrypt_failures: Family<ReasonLabels, Counter>,
    inbound: Family<KindLabels, Counter>,
    duplicate_deliveries: Counter,
    open_connections: Gauge,
    connections_refused: Counter,
    dead_lettered: Family<QueueLabels, Counter>,
    records_stored: Family<CorpLabels, Counter>,
    records_duplicate: Family<CorpLabels, Counter>,
    pages: Family<CorpLabels, Counter>,
    secret_key_failures: Family<KeyFailureLabels, Counter>,
    secret_keys_recovered: Family<CorpLabels, Counter>,
    cursor_lag: Family<CorpLabels, Gauge>,
    pull_failures: Family<CorpLabels, Counter>,
    token_refreshes: Family<CorpLabels, Counter>,
    upstream_retries: Family<CauseLabels, Counter>,
    finance_worker_losses: Family<ReasonLabels, Counter>,
    finance_content: Family<ContentLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContentLabels {
    corp_id: String,
    status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wecom_zone");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, LatencyHistogram, HistogramConstructor>::new_with_constructor(|| {
            LatencyHistogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let decrypt_failures = Family::<ReasonLabels, Counter>::default();
        let inbound = Family::<KindLabels, Counter>::default();
        let duplicate_deliveries = Counter::default();
        let open_connections = Gauge::default();
        let connections_refused = Counter::default();
        let dead_lettered = Family::<QueueLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Mailbox notifications (queue=mailbox) and async results (queue=jobs) that became dead letters \
             after delivery.max_attempts failures, since start; ingest_status counts those stored",
            dead_lettered.clone(),
        );
        registry.register("open_connections", "HTTP connections being served", open_connections.clone());
        registry.register(
            "connections_refused",
            "HTTP connections closed on accept because server.max_connections were open",
            connections_refused.clone(),
        );
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_duration.clone());
        registry.register(
            "decrypt_failures",
            "Callbacks refused by the envelope, signature, clock, AES or ReceiveId checks, by reason",
            decrypt_failures.clone(),
        );
        registry.register("inbound", "Authenticated callbacks processed, by event or ability", inbound.clone());
        registry.register(
            "duplicate_deliveries",
            "Callbacks acknowledged without processing because they were delivered before",
            duplicate_deliveries.clone(),
        );
        let records_stored = Family::<CorpLabels, Counter>::default();
        let records_duplicate = Family::<CorpLabels, Counter>::default();
        let pages = Family::<CorpLabels, Counter>::default();
        let secret_key_failures = Family::<KeyFailureLabels, Counter>::default();
        let secret_keys_recovered = Family::<CorpLabels, Counter>::default();
        let cursor_lag = Family::<CorpLabels, Gauge>::default();
        let pull_failures = Family::<CorpLabels, Counter>::default();
        let token_refreshes = Family::<CorpLabels, Counter>::default();
        let upstream_retries = Family::<CauseLabels, Counter>::default();
        registry.register("records_stored", "Chat records newly stored", records_stored.clone());
        registry.register(
            "records_duplicate",
            "Chat records pulled again and left unchanged (already stored)",
            records_duplicate.clone(),
        );
        registry.register("pages", "sync_msg pages committed", pages.clone());
        registry.register(
            "secret_key_failures",
            "Records stored without a secret key, by reason and key version",
            secret_key_failures.clone(),
        );
        registry.register(
            "secret_keys_recovered",
            "Records whose secret key was decrypted later, when their key version appeared",
            secret_keys_recovered.clone(),
        );
        registry.register(
            "cursor_lag_seconds",
            "Age of the newest stored message at the end of the last pull",
            cursor_lag.clone(),
        );
        registry.register("pull_failures", "Pulls that stopped on an error (retried later)", pull_failures.clone());
        registry.register("token_refreshes", "access_token fetches from gettoken", token_refreshes.clone());
        registry.register("upstream_retries", "Upstream attempts retried, by cause", upstream_retries.clone());
        let finance_worker_losses = Family::<ReasonLabels, Counter>::default();
        let finance_content = Family::<ContentLabels, Counter>::default();
        registry.register(
            "finance_worker_losses",
            "Finance SDK worker processes lost and replaced, by reason (crash, deadline, protocol)",
            finance_worker_losses.clone(),
        );
        registry.register(
            "finance_content",
            "Classic archive records by the content status DecryptData and validation gave them \
             (ok, pending, sdk_error_<code>, crashed, invalid), counted when stored or retried",
            finance_content.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            decrypt_failures,
            inbound,
            duplicate_deliveries,
            open_connections,
            connections_refused,
            dead_lettered,
            records_stored,
            records_duplicate,
            pages,
            secret_key_failures,
            secret_keys_recovered,
            cursor_lag,
            pull_failures,
            token_refreshes,
            upstream_retries,
            finance_worker_losses,
            finance_content,
        }
    }

    /// `route` is a route template, never a raw path.
    pub fn http_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.http_requests.get_or_create(&RequestLabels { route, status }).inc();
        self.http_duration.get_or_create(&RouteLabels { route }).observe(seconds);
    }

    pub fn decrypt_failure(&self, reason: &'static str) {
        self.decrypt_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// `kind` comes from a bounded set (`EventKind::label`, `Ability::label`).
    pub fn inbound(&self, kind: &'static str) {
        self.inbound.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn duplicate_delivery(&self) {
        self.duplicate_deliveries.inc();
    }

    /// `queue` is `mailbox` or `jobs`.
    pub fn dead_lettered(&self, queue: &'static str) {
        self.dead_lettered.get_or_create(&QueueLabels { queue }).inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn open_connection(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    pub fn page_committed(&self, corp_id: &str, inserted: usize, duplicates: usize) {
        let labels = corp(corp_id);
        self.pages.get_or_create(&labels).inc();
        self.records_stored.get_or_create(&labels).inc_by(inserted as u64);
        self.records_duplicate.get_or_create(&labels).inc_by(duplicates as u64);
    }

    pub fn secret_key_failure(&self, corp_id: &str, reason: &str, key_version: Option<u32>) {
        let key_version = key_version.map_or_else(|| "none".to_owned(), |version| version.to_string());
        let labels = KeyFailureLabels { corp_id: corp_id.to_owned(), reason: reason.to_owned(), key_version };
        self.secret_key_failures.get_or_create(&labels).inc();
    }

    pub fn secret_keys_recovered(&self, corp_id: &str, count: usize) {
        self.secret_keys_recovered.get_or_create(&corp(corp_id)).inc_by(count as u64);
    }

    pub fn cursor_lag(&self, corp_id: &str, seconds: i64) {
        self.cursor_lag.get_or_create(&corp(corp_id)).set(seconds);
    }

    pub fn pull_failure(&self, corp_id: &str) {
        self.pull_failures.get_or_create(&corp(corp_id)).inc();
    }

    pub fn token_refresh(&self, corp_id: &str) {
        self.token_refreshes.get_or_create(&corp(corp_id)).inc();
    }

    pub fn upstream_retry(&self, cause: &str) {
        self.upstream_retries.get_or_create(&CauseLabels { cause: cause.to_owned() }).inc();
    }

    /// `reason` is `crash`, `deadline` or `protocol`.
    pub fn finance_worker_lost(&self, reason: &'static str) {
        self.finance_worker_losses.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// `status` is a content status's text (a bounded set: the SDK's codes are a short list).
    pub fn finance_content(&self, corp_id: &str, status: &str, count: usize) {
        let labels = ContentLabels { corp_id: corp_id.to_owned(), status: status.to_owned() };
        self.finance_content.get_or_create(&labels).inc_by(count as u64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn corp(corp_id: &str) -> CorpLabels {
    CorpLabels { corp_id: corp_id.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_renders_as_a_cumulative_prometheus_histogram() {
        let metrics = Metrics::new();
        for seconds in [0.00005, 0.0003, 0.0003, 100.0] {
            metrics.http_request("/", 200, seconds);
        }
        let text = metrics.render();
        let line = |le: &str| {
            text.lines()
                .find(|line| {
                    line.contains("http_request_duration_seconds_bucket") && line.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line("0.0001"), "1");
        assert_eq!(line("0.0004"), "3", "cumulative");
        assert_eq!(line("+Inf"), "4");
        assert!(text.contains("wecom_zone_http_request_duration_seconds_count{route=\"/\"} 4"), "{text}");
        assert!(text.contains("wecom_zone_http_requests_total{route=\"/\",status=\"200\"} 4"), "{text}");
    }
}
