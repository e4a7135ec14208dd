//! The model service's metrics, recorded through the OpenTelemetry metrics API and
//! exported for Prometheus on the metrics port. The names, labels and buckets are the
//! contract shared with the dashboards and alert rules (docs/contracts.md); they are
//! defined here and nowhere else in this service. (The exporter adds `_total` to counters.)

use std::sync::{Arc, Mutex};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, UpDownCounter},
};
use sms_runtime::telemetry::{InFlight, MetricsPipeline};

/// Fine enough for sub-millisecond inference (the word model takes ~0.15 ms).
pub const INFERENCE_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// What `sms_model_info` reports: the card being served.
#[derive(Debug, Clone, Default)]
struct ServedModel {
    name: String,
    data_sha256: String,
}

pub struct Metrics {
    pipeline: MetricsPipeline,
    /// `version` and `source`, the labels every series carries.
    labels: [KeyValue; 2],
    predictions: Counter<u64>,
    inference_seconds: Histogram<f64>,
    inflight: UpDownCounter<i64>,
    requests: Counter<u64>,
    reloads: Counter<u64>,
    served: Arc<Mutex<ServedModel>>,
}

impl Metrics {
    pub fn new(version: &str, source: &str, otlp_endpoint: Option<&str>) -> Self {
        let pipeline = MetricsPipeline::new("model-service", otlp_endpoint);
        let meter = pipeline.meter();
        let labels = [KeyValue::new("version", version.to_string()), KeyValue::new("source", source.to_string())];
        let served = Arc::new(Mutex::new(ServedModel::default()));
        {
            // Observed at each scrape: only the card being served, never one swapped out.
            let (served, labels) = (served.clone(), labels.clone());
            meter
                .i64_observable_gauge("sms_model_info")
                .with_description("The model being served (always 1).")
                .with_callback(move |observer| {
                    let s = served.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let [version, source] = labels.clone();
                    observer.observe(1, &[
                        version,
                        source,
                        KeyValue::new("model_name", s.name),
                        KeyValue::new("data_sha256", s.data_sha256),
                    ]);
                })
                .build();
        }
        let m = Self {
            predictions: meter
                .u64_counter("sms_model_predictions")
                .with_description("Messages classified by the model, by result.")
                .build(),
            requests: meter.u64_counter("sms_model_requests").with_description("Classify calls answered, by gRPC status code.").build(),
            reloads: meter.u64_counter("sms_model_reloads").with_description("Attempts to load new model files, by outcome.").build(),
            inflight: meter
                .i64_up_down_counter("sms_model_inflight_requests")
                .with_description("Classify calls being processed.")
                .build(),
            inference_seconds: meter
                .f64_histogram("sms_model_inference_seconds")
                .with_description("Time ONNX Runtime spent on one message.")
                .with_boundaries(INFERENCE_BUCKETS.to_vec())
                .build(),
            labels,
            served,
            pipeline,
        };
        // Export every series from the start so dashboards, rate() and increase() see
        // zeros, not gaps.
        for result in ["spam", "ham"] {
            m.predictions.add(0, &m.with("result", result));
        }
        m.requests.add(0, &m.with("code", "Ok"));
        for outcome in ["success", "failure"] {
            m.reloads.add(0, &m.with("outcome", outcome));
        }
        m.inflight.add(0, &m.labels);
        m
    }

    /// The common labels plus one more.
    fn with(&self, key: &'static str, value: &str) -> [KeyValue; 3] {
        let [version, source] = self.labels.clone();
        [version, source, KeyValue::new(key, value.to_string())]
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        InFlight::new(&self.inflight, &self.labels)
    }

    pub fn predicted(&self, label: &str, inference_seconds: f64) {
        self.predictions.add(1, &self.with("result", label));
        self.inference_seconds.record(inference_seconds, &self.labels);
    }

    /// One answered Classify call, by its gRPC code name (`Ok`, `InvalidArgument`, ...).
    pub fn answered(&self, code: tonic::Code) {
        self.requests.add(1, &self.with("code", &format!("{code:?}")));
    }

    pub fn reloaded(&self, success: bool) {
        self.reloads.add(1, &self.with("outcome", if success { "success" } else { "failure" }));
    }

    pub fn set_model_info(&self, model_name: &str, data_sha256: &str) {
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) =
            ServedModel { name: model_name.into(), data_sha256: data_sha256.into() };
    }

    pub fn render(&self) -> String {
        self.pipeline.render()
    }
}
