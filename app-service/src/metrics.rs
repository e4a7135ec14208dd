//! The app's metrics, recorded through the OpenTelemetry metrics API and exported for
//! Prometheus at `/metrics`. Names, labels and buckets are the contract shared with the
//! dashboards and alert rules (docs/contracts.md) and are defined here only. Every series
//! carries the app's `version`, so v1 and v2 can be compared side by side. (The exporter
//! adds `_total` to counters.)

use opentelemetry::{
    KeyValue,
    metrics::{BoundCounter, BoundUpDownCounter, Counter, Histogram},
};
use std::sync::Arc;

use sms_runtime::{
    conn::OnRefused,
    telemetry::{InFlight, MetricsPipeline},
};

pub const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The `method` label's values: anything else is `other`, so no client can grow the
/// number of series by inventing methods.
const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"];

pub struct Metrics {
    pipeline: MetricsPipeline,
    version: [KeyValue; 1],
    requests: Counter<u64>,
    active_requests: BoundUpDownCounter<i64>,
    latency: Histogram<f64>,
    classified: Counter<u64>,
    model_calls: Counter<u64>,
    cache_hits: Counter<u64>,
    cache_misses: Counter<u64>,
    guesses: Counter<u64>,
    refused_connections: BoundCounter<u64>,
}

impl Metrics {
    pub fn new(version: &str, cache_enabled: bool, otlp_endpoint: Option<&str>) -> Self {
        let pipeline = MetricsPipeline::new("app-service", otlp_endpoint);
        let meter = pipeline.meter();
        let counter = |name: &'static str, help: &'static str| meter.u64_counter(name).with_description(help).build();
        let m = Self {
            version: [KeyValue::new("version", version.to_string())],
            requests: counter("sms_requests", "HTTP requests answered."),
            classified: counter("sms_messages_classified", "Messages classified, by result."),
            model_calls: counter("sms_model_calls", "Calls to the model tier, by outcome."),
            cache_hits: counter("sms_cache_hits", "Classifications answered from the prediction cache."),
            cache_misses: counter("sms_cache_misses", "Classifications the prediction cache could not answer."),
            guesses: counter("sms_guesses", "User guesses, by whether the classifier agreed."),
            refused_connections: counter(
                "sms_refused_connections",
                "Connections refused over MAX_CONNECTIONS (answered 503 before any request was read).",
            )
            .bind(&[KeyValue::new("version", version.to_string())]),
            active_requests: meter
                .i64_up_down_counter("sms_active_requests")
                .with_description("HTTP requests in progress.")
                .build()
                .bind(&[KeyValue::new("version", version.to_string())]),
            latency: meter
                .f64_histogram("sms_request_latency_seconds")
                .with_description("HTTP request latency.")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            pipeline,
        };
        meter
            .i64_gauge("sms_app_info")
            .with_description("This app (always 1).")
            .build()
            .record(1, &[m.version[0].clone(), KeyValue::new("cache_enabled", cache_enabled.to_string())]);
        // Export every series from the start, so rates and ratios are 0 rather than absent.
        for result in ["spam", "ham"] {
            m.classified.add(0, &m.with("result", result));
        }
        for outcome in ["ok", "error", "timeout", "unavailable"] {
            m.model_calls.add(0, &m.with("outcome", outcome));
        }
        for agreement in ["agree", "disagree"] {
            m.guesses.add(0, &m.with("agreement", agreement));
        }
        // The classification route's answers too, failures included: `increase()` does not
        // count a series' first sample, so a 503 series born during a canary would hide
        // its first errors from the error share.
        for status in ["200", "500", "503"] {
            let route = [KeyValue::new("method", "POST"), KeyValue::new("route", "/sms/")];
            m.requests
                .add(0, &[m.version[0].clone(), route[0].clone(), route[1].clone(), KeyValue::new("status", status)]);
        }
        m.refused_connections.add(0);
        m.cache_hits.add(0, &m.version);
        m.cache_misses.add(0, &m.version);
        m.active_requests.add(0);
        m
    }

    fn with(&self, key: &'static str, value: &str) -> [KeyValue; 2] {
        [self.version[0].clone(), KeyValue::new(key, value.to_string())]
    }

    pub fn active_request(&self) -> InFlight<'_> {
        InFlight::new(&self.active_requests)
    }

    /// One answered HTTP request. `route` is a matched route pattern (a closed set).
    pub fn request(&self, method: &http::Method, route: &str, status: http::StatusCode, seconds: f64) {
        let method = METHODS.iter().find(|m| **m == method.as_str()).copied().unwrap_or("other");
        let labels =
            [self.version[0].clone(), KeyValue::new("method", method), KeyValue::new("route", route.to_string())];
        self.latency.record(seconds, &labels);
        let [version, method, route] = labels;
        self.requests.add(1, &[version, method, route, KeyValue::new("status", status.as_u16().to_string())]);
    }

    pub fn classified(&self, label: &str) {
        self.classified.add(1, &self.with("result", label));
    }

    /// `outcome`: `ok|error|timeout|unavailable`.
    pub fn model_call(&self, outcome: &'static str) {
        self.model_calls.add(1, &self.with("outcome", outcome));
    }

    pub fn cache_lookup(&self, hit: bool) {
        if hit { &self.cache_hits } else { &self.cache_misses }.add(1, &self.version);
    }

    pub fn guess(&self, agrees: bool) {
        self.guesses.add(1, &self.with("agreement", if agrees { "agree" } else { "disagree" }));
    }

    /// What the HTTP accept loop calls for each connection it refuses over MAX_CONNECTIONS.
    pub fn refusals(&self) -> OnRefused {
        let refused = self.refused_connections.clone();
        Arc::new(move || refused.add(1))
    }

    pub fn render(&self) -> String {
        self.pipeline.render()
    }
}
