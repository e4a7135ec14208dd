//! Every series of the service created once: named, described, bucketed, bound to its
//! labels where it is recorded on every call, and exported at zero from the start.

use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use sms_runtime::telemetry::MetricsPipeline;

use super::{
    Comparisons, INFERENCE_BUCKETS, Metrics, PROBABILITY_GAP_BUCKETS, PerProtocol, Protocol, ServedModel,
    record::code_name,
};
use crate::drift::{INPUT_CHARS_BUCKETS, Quantity, SPAM_PROBABILITY_BUCKETS, le_label};

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
}
