//! The model service's metrics, recorded through the OpenTelemetry metrics API and
//! exported for Prometheus on the metrics port. The names, labels and buckets are the
//! contract shared with the dashboards and alert rules (docs/contracts.md); they are
//! defined here and nowhere else in this service. (The exporter adds `_total` to counters.)

use std::sync::{Arc, Mutex};

use opentelemetry::{
    KeyValue,
    metrics::{BoundCounter, BoundHistogram, BoundUpDownCounter, Counter},
};
use sms_runtime::{
    conn::OnRefused,
    telemetry::{InFlight, MetricsPipeline},
};

use crate::{
    drift::{INPUT_CHARS_BUCKETS, Quantity, Reference, SPAM_PROBABILITY_BUCKETS, le_label},
    model::ModelCard,
};

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
    /// `reference_version`: the version this server compares its answers with (a shadow's
    /// serving version), if any.
    pub fn new(version: &str, source: &str, reference_version: Option<&str>, otlp_endpoint: Option<&str>) -> Self {
        let pipeline = MetricsPipeline::new("model-service", otlp_endpoint);
        let meter = pipeline.meter();
        let labels = [KeyValue::new("version", version.to_string()), KeyValue::new("source", source.to_string())];
        let with = |key: &'static str, value: &'static str| {
            let [version, source] = labels.clone();
            [version, source, KeyValue::new(key, value)]
        };
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
                    observer.observe(
                        1,
                        &[
                            version,
                            source,
                            KeyValue::new("model_name", s.name),
                            KeyValue::new("data_sha256", s.data_sha256),
                        ],
                    );
                })
                .build();
        }
        {
            // The card's reference, beside the live histograms it is compared with: a
            // fixed set of series (one per bucket), the served card's only.
            let (served, labels) = (served.clone(), labels.clone());
            meter
                .f64_observable_gauge("sms_model_reference_share")
                .with_description(
                    "Share of the model card's held-out messages per bucket (previous le, le] of the \
                     histogram named by quantity; `bucket` is the le.",
                )
                .with_callback(move |observer| {
                    let Some(reference) = served.lock().unwrap_or_else(|e| e.into_inner()).reference.clone() else {
                        return;
                    };
                    for quantity in Quantity::ALL {
                        let shares = reference.shares(quantity);
                        for (&le, &share) in shares.le.iter().zip(&shares.share) {
                            let [version, source] = labels.clone();
                            observer.observe(
                                share,
                                &[
                                    version,
                                    source,
                                    KeyValue::new("quantity", quantity.label()),
                                    KeyValue::new("bucket", le_label(le)),
                                ],
                            );
                        }
                    }
                })
                .build();
        }
        {
            let (served, labels) = (served.clone(), labels.clone());
            meter
                .f64_observable_gauge("sms_model_reference_spam_share")
                .with_description("Share of the model card's held-out messages that the model labels spam.")
                .with_callback(move |observer| {
                    if let Some(reference) = served.lock().unwrap_or_else(|e| e.into_inner()).reference.clone() {
                        observer.observe(reference.predicted_spam_share, &labels);
                    }
                })
                .build();
        }
        let predictions = meter
            .u64_counter("sms_model_predictions")
            .with_description("Messages classified by the model, by result and the protocol of the call.")
            .build();
        let requests = meter
            .u64_counter("sms_model_requests")
            .with_description("Classify calls answered, by gRPC status code.")
            .build();
        let reloads = meter
            .u64_counter("sms_model_reloads")
            .with_description("Attempts to load new model files, by outcome.")
            .build();
        let refused_connections = meter
            .u64_counter("sms_model_refused_connections")
            .with_description("Connections refused over MAX_CONNECTIONS, by listener (grpc, metrics).")
            .build();
        let inflight = meter
            .i64_up_down_counter("sms_model_inflight_requests")
            .with_description("Classify calls being processed.")
            .build();
        let inference_seconds = meter
            .f64_histogram("sms_model_inference_seconds")
            .with_description(
                "Time ONNX Runtime spent on one message (a batch's run divided by its rows), by protocol.",
            )
            .with_boundaries(INFERENCE_BUCKETS.to_vec())
            .build();
        let spam_probability = meter
            .f64_histogram("sms_model_spam_probability")
            .with_description(
                "The model's spam probability per message, by protocol (the reference: sms_model_reference_share).",
            )
            .with_boundaries(SPAM_PROBABILITY_BUCKETS.to_vec())
            .build();
        let input_chars = meter
            .u64_histogram("sms_model_input_chars")
            .with_description("Characters per message scored (after whitespace normalization), by protocol.")
            .with_boundaries(INPUT_CHARS_BUCKETS.to_vec())
            .build();
        let guesses = meter
            .u64_counter("sms_model_guesses")
            .with_description("Calls that carried the user's guess, by whether this model's answer agreed.")
            .build();
        let comparisons = reference_version.map(|reference| {
            let labels = |outcome: &'static str| {
                let [version, source] = labels.clone();
                [
                    version,
                    source,
                    KeyValue::new("reference_version", reference.to_string()),
                    KeyValue::new("outcome", outcome),
                ]
            };
            let counter = meter
                .u64_counter("sms_shadow_comparisons")
                .with_description("Calls also scored by the reference model, by whether the two labels agreed.")
                .build();
            let [version, source, reference, _] = labels("agree");
            Comparisons {
                agree: counter.bind(&labels("agree")),
                disagree: counter.bind(&labels("disagree")),
                gap: meter
                    .f64_histogram("sms_shadow_probability_gap")
                    .with_description("|spam probability - the reference model's| per compared call.")
                    .with_boundaries(PROBABILITY_GAP_BUCKETS.to_vec())
                    .build()
                    .bind(&[version, source, reference]),
            }
        });
        // Export every series from the start so dashboards, rate() and increase() see
        // zeros, not gaps.
        for outcome in ["success", "failure"] {
            reloads.add(0, &with("outcome", outcome));
        }
        let m = Self {
            predictions: Protocol::ALL.map(|p| {
                let [version, source] = labels.clone();
                let protocol = KeyValue::new("protocol", p.label());
                PerProtocol {
                    spam: predictions.bind(&[
                        version.clone(),
                        source.clone(),
                        KeyValue::new("result", "spam"),
                        protocol.clone(),
                    ]),
                    ham: predictions.bind(&[
                        version.clone(),
                        source.clone(),
                        KeyValue::new("result", "ham"),
                        protocol.clone(),
                    ]),
                    inference_seconds: inference_seconds.bind(&[version.clone(), source.clone(), protocol.clone()]),
                    spam_probability: spam_probability.bind(&[version.clone(), source.clone(), protocol.clone()]),
                    input_chars: input_chars.bind(&[version, source, protocol]),
                }
            }),
            answered_ok: requests.bind(&with("code", "Ok")),
            guess_agrees: guesses.bind(&with("agreement", "agree")),
            guess_disagrees: guesses.bind(&with("agreement", "disagree")),
            comparisons,
            inflight: inflight.bind(&labels),
            requests,
            reloads,
            refused_connections,
            labels,
            served,
            pipeline,
        };
        for p in &m.predictions {
            p.spam.add(0);
            p.ham.add(0);
        }
        for series in [&m.answered_ok, &m.guess_agrees, &m.guess_disagrees] {
            series.add(0);
        }
        // The server-side failures start at 0 too: `increase()` does not count a series'
        // first sample, so a failure series born during an experiment would hide its
        // first errors from the error share.
        use tonic::Code;
        for code in [Code::ResourceExhausted, Code::DeadlineExceeded, Code::Unavailable, Code::Internal] {
            let [version, source] = m.labels.clone();
            m.requests.add(0, &[version, source, KeyValue::new("code", code_name(code))]);
        }
        if let Some(c) = &m.comparisons {
            c.agree.add(0);
            c.disagree.add(0);
        }
        m.inflight.add(0);
        m
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        InFlight::new(&self.inflight)
    }

    /// One prediction (`spam` unless `is_spam` is false) of a call that came in through
    /// `protocol`, and the time ONNX Runtime took for it.
    pub fn predicted(&self, protocol: Protocol, is_spam: bool, inference_seconds: f64) {
        let p = &self.predictions[protocol as usize];
        if is_spam { &p.spam } else { &p.ham }.add(1);
        p.inference_seconds.record(inference_seconds);
    }

    /// What one message of a call that came in through `protocol` looked like to the
    /// model: its spam probability and its length in characters (the drift histograms).
    pub fn scored(&self, protocol: Protocol, spam_probability: f32, input_chars: usize) {
        let p = &self.predictions[protocol as usize];
        p.spam_probability.record(f64::from(spam_probability));
        p.input_chars.record(input_chars as u64);
    }

    /// A call that carried the user's guess: did this model's answer agree with it?
    pub fn guessed(&self, agrees: bool) {
        if agrees { &self.guess_agrees } else { &self.guess_disagrees }.add(1);
    }

    /// A call also scored by the reference model (only on a server that has one).
    pub fn compared(&self, agrees: bool, probability_gap: f64) {
        if let Some(c) = &self.comparisons {
            if agrees { &c.agree } else { &c.disagree }.add(1);
            c.gap.record(probability_gap);
        }
    }

    /// One answered Classify call, by its gRPC code name (`Ok`, `InvalidArgument`, ...).
    pub fn answered(&self, code: tonic::Code) {
        if code == tonic::Code::Ok {
            self.answered_ok.add(1);
        } else {
            let [version, source] = self.labels.clone();
            self.requests.add(1, &[version, source, KeyValue::new("code", code_name(code))]);
        }
    }

    /// What `listener`'s accept loop calls for each connection it refuses over
    /// MAX_CONNECTIONS; its series is exported at 0 from now on (start-up, for both).
    pub fn refusals(&self, listener: &'static str) -> OnRefused {
        let [version, source] = self.labels.clone();
        let refused = self.refused_connections.bind(&[version, source, KeyValue::new("listener", listener)]);
        refused.add(0);
        Arc::new(move || refused.add(1))
    }

    pub fn reloaded(&self, success: bool) {
        let [version, source] = self.labels.clone();
        let outcome = KeyValue::new("outcome", if success { "success" } else { "failure" });
        self.reloads.add(1, &[version, source, outcome]);
    }

    /// The card being served: `sms_model_info` and the drift reference (a card without
    /// one, or with one in other buckets, exports no reference).
    pub fn set_model_info(&self, card: &ModelCard) {
        let reference = card.reference.as_ref().and_then(|r| match r.check() {
            Ok(()) => Some(Arc::new(r.clone())),
            Err(e) => {
                tracing::warn!(model = %card.name, "the model card's drift reference is not exported: {e}");
                None
            }
        });
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) =
            ServedModel { name: card.name.clone(), data_sha256: card.data.sha256.clone(), reference };
    }

    pub fn render(&self) -> String {
        self.pipeline.render()
    }
}

/// The gRPC code's name as the `code` label shows it (tonic's `Debug` spelling).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_are_tonics_debug_names() {
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(super::code_name(code), format!("{code:?}"));
        }
    }
}
