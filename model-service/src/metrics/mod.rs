//! The model service's metrics, recorded through the OpenTelemetry metrics API and
//! exported for Prometheus on the metrics port. The names, labels and buckets are the
//! contract shared with the dashboards and alert rules (docs/contracts.md); they are
//! defined here and nowhere else in this service. (The exporter adds `_total` to counters.)
//!
//! Here the service's series and buckets; `register` creates every series and exports it
//! at zero, `record` is what the service calls as things happen.

use std::sync::{Arc, Mutex};

use opentelemetry::{
    KeyValue,
    metrics::{BoundCounter, BoundHistogram, BoundUpDownCounter, Counter},
};
use sms_runtime::telemetry::{InFlight, MetricsPipeline};

use crate::drift::Reference;

mod record;
mod register;

/// Fine enough for sub-millisecond inference (the word model takes ~0.15 ms).
pub const INFERENCE_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Where |p_shadow - p_reference| falls: most pairs agree closely, a few are far apart.
pub const PROBABILITY_GAP_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0];

/// How a call came in: the `protocol` label of the prediction series, bounded to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `sms.v1.SpamClassifier/Classify`.
    Sms,
    /// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService/ModelInfer`).
    OipGrpc,
    /// The Open Inference Protocol over HTTP/JSON (`POST /v2/models/sms-spam/infer`).
    OipRest,
}

impl Protocol {
    pub const ALL: [Self; 3] = [Self::Sms, Self::OipGrpc, Self::OipRest];

    /// The label's value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::OipGrpc => "oip-grpc",
            Self::OipRest => "oip-rest",
        }
    }
}

/// The series recorded per prediction, bound once per protocol.
struct PerProtocol {
    spam: BoundCounter<u64>,
    ham: BoundCounter<u64>,
    inference_seconds: BoundHistogram<f64>,
    spam_probability: BoundHistogram<f64>,
    input_chars: BoundHistogram<u64>,
}

/// The comparison with the reference model's answers (a shadow with REFERENCE_VERSION).
struct Comparisons {
    agree: BoundCounter<u64>,
    disagree: BoundCounter<u64>,
    gap: BoundHistogram<f64>,
}

/// What `sms_model_info` reports: the card being served.
#[derive(Debug, Clone, Default)]
struct ServedModel {
    name: String,
    data_sha256: String,
    /// Its card's reference, when it is one in this service's buckets.
    reference: Option<Arc<Reference>>,
}

pub struct Metrics {
    pipeline: MetricsPipeline,
    /// `version` and `source`, the labels every series carries.
    labels: [KeyValue; 2],
    // Recorded on every call: bound to their labels once (indexed by `Protocol`).
    predictions: [PerProtocol; 3],
    inflight: BoundUpDownCounter<i64>,
    answered_ok: BoundCounter<u64>,
    guess_agrees: BoundCounter<u64>,
    guess_disagrees: BoundCounter<u64>,
    comparisons: Option<Comparisons>,
    // The rest: labels looked up when recorded.
    requests: Counter<u64>,
    reloads: Counter<u64>,
    refused_connections: Counter<u64>,
    served: Arc<Mutex<ServedModel>>,
}

impl Metrics {
    pub fn in_flight(&self) -> InFlight<'_> {
        InFlight::new(&self.inflight)
    }

    pub fn render(&self) -> String {
        self.pipeline.render()
    }
}
