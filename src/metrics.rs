//! Prometheus metrics, one registry per service instance (so tests can run several services in
//! one process without sharing counters).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramConstructor = fn() -> Histogram;

pub struct Metrics {
    // Registration happens once; encoding takes the lock only to read.
    registry: Mutex<Registry>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, HistogramConstructor>,
    decrypt_failures: Family<ReasonLabels, Counter>,
    inbound: Family<KindLabels, Counter>,
    duplicate_deliveries: Counter,
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
        let http_duration = Family::<RouteLabels, Histogram, HistogramConstructor>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let decrypt_failures = Family::<ReasonLabels, Counter>::default();
        let inbound = Family::<KindLabels, Counter>::default();
        let duplicate_deliveries = Counter::default();
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
        Metrics {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            decrypt_failures,
            inbound,
            duplicate_deliveries,
        }
    }

    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests.get_or_create(&RequestLabels { route: route.to_owned(), status: status.to_string() }).inc();
        self.http_duration.get_or_create(&RouteLabels { route: route.to_owned() }).observe(seconds);
    }

    pub fn decrypt_failure(&self, reason: &str) {
        self.decrypt_failures.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    pub fn inbound(&self, kind: &str) {
        self.inbound.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }

    pub fn duplicate_delivery(&self) {
        self.duplicate_deliveries.inc();
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
