//! The app's Prometheus metrics. Names are the contract shared with the dashboards and
//! alert rules (docs/contracts.md) and are defined here only. Every series carries the
//! app's `version`, so v1 and v2 can be compared side by side.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

pub struct Metrics {
    registry: Registry,
    version: String,
    pub requests: IntCounterVec,
    pub active_requests: IntGauge,
    pub latency: HistogramVec,
    pub classified: IntCounterVec,
    pub model_calls: IntCounterVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub guesses: IntCounterVec,
}

impl Metrics {
    pub fn new(version: &str, cache_enabled: bool) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let requests =
            counter("sms_requests_total", "HTTP requests answered.", &["version", "method", "route", "status"]);
        let classified = counter("sms_messages_classified_total", "Messages classified, by result.", &["version", "result"]);
        let model_calls = counter("sms_model_calls_total", "Calls to the model tier, by outcome.", &["version", "outcome"]);
        let cache_hits = counter("sms_cache_hits_total", "Classifications answered from the prediction cache.", &["version"]);
        let cache_misses =
            counter("sms_cache_misses_total", "Classifications the prediction cache could not answer.", &["version"]);
        let guesses = counter(
            "sms_guesses_total",
            "User guesses, by whether the classifier agreed.",
            &["version", "agreement"],
        );
        let active = IntGaugeVec::new(Opts::new("sms_active_requests", "HTTP requests in progress."), &["version"])
            .expect("valid metric");
        registry.register(Box::new(active.clone())).expect("unique metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("sms_request_latency_seconds", "HTTP request latency.").buckets(LATENCY_BUCKETS.to_vec()),
            &["version", "method", "route"],
        )
        .expect("valid metric");
        registry.register(Box::new(latency.clone())).expect("unique metric");
        let info = IntGaugeVec::new(Opts::new("sms_app_info", "This app (always 1)."), &["version", "cache_enabled"])
            .expect("valid metric");
        registry.register(Box::new(info.clone())).expect("unique metric");
        info.with_label_values(&[version, if cache_enabled { "true" } else { "false" }]).set(1);

        // Export every series from the start, so rates and ratios are 0 rather than absent.
        for result in ["spam", "ham"] {
            classified.with_label_values(&[version, result]);
        }
        for outcome in ["ok", "error", "timeout", "unavailable"] {
            model_calls.with_label_values(&[version, outcome]);
        }
        for agreement in ["agree", "disagree"] {
            guesses.with_label_values(&[version, agreement]);
        }
        cache_hits.with_label_values(&[version]);
        cache_misses.with_label_values(&[version]);

        Self {
            active_requests: active.with_label_values(&[version]),
            registry,
            version: version.into(),
            requests,
            latency,
            classified,
            model_calls,
            cache_hits,
            cache_misses,
            guesses,
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8 metrics")
    }
}
