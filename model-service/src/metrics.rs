//! The model service's Prometheus metrics. The names are the contract shared with the
//! dashboards and alert rules (docs/contracts.md); they are defined here and nowhere else
//! in this service.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Fine enough for sub-millisecond inference (the word model takes ~0.15 ms).
pub const INFERENCE_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

pub struct Metrics {
    registry: Registry,
    version: String,
    source: String,
    pub predictions: IntCounterVec,
    pub inference_seconds: HistogramVec,
    pub inflight: IntGaugeVec,
    pub requests: IntCounterVec,
    pub info: IntGaugeVec,
    pub reloads: IntCounterVec,
}

impl Metrics {
    pub fn new(version: &str, source: &str) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let predictions = counter(
            "sms_model_predictions_total",
            "Messages classified by the model, by result.",
            &["version", "source", "result"],
        );
        let requests = counter(
            "sms_model_requests_total",
            "Classify calls answered, by gRPC status code.",
            &["version", "source", "code"],
        );
        let reloads = counter(
            "sms_model_reloads_total",
            "Attempts to load new model files, by outcome.",
            &["version", "source", "outcome"],
        );
        let inflight =
            gauge("sms_model_inflight_requests", "Classify calls being processed.", &["version", "source"]);
        let info = gauge(
            "sms_model_info",
            "The model being served (always 1).",
            &["version", "source", "model_name", "data_sha256"],
        );
        let inference_seconds = HistogramVec::new(
            HistogramOpts::new("sms_model_inference_seconds", "Time ONNX Runtime spent on one message.")
                .buckets(INFERENCE_BUCKETS.to_vec()),
            &["version", "source"],
        )
        .expect("valid metric");
        registry.register(Box::new(inference_seconds.clone())).expect("unique metric");

        let m = Self {
            registry,
            version: version.into(),
            source: source.into(),
            predictions,
            inference_seconds,
            inflight,
            requests,
            info,
            reloads,
        };
        // Export every series from the start so dashboards and rate() see zeros, not gaps.
        for result in ["spam", "ham"] {
            m.predictions.with_label_values(&[version, source, result]);
        }
        m.requests.with_label_values(&[version, source, "Ok"]);
        m.inflight.with_label_values(&[version, source]);
        m.inference_seconds.with_label_values(&[version, source]);
        m
    }

    pub fn labels(&self) -> [&str; 2] {
        [&self.version, &self.source]
    }

    pub fn set_model_info(&self, model_name: &str, data_sha256: &str) {
        self.info.reset();
        self.info.with_label_values(&[&self.version, &self.source, model_name, data_sha256]).set(1);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8 metrics")
    }
}

/// The value of one sample in Prometheus text output whose labels include `labels`, e.g.
/// `sample_value(&text, "sms_model_predictions_total", &[("result", "spam")])`. For tests
/// and tools that read a /metrics page.
pub fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}
