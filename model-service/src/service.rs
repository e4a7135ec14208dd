//! The `sms.v1.SpamClassifier` gRPC handlers: validate, queue for inference, record
//! metrics. Thin on purpose: inference lives in `workers`, the model in `model`.

use std::{sync::Arc, time::Duration};

use bytes::Buf;
use prost::Message;

use sms_proto::{
    GUESS_METADATA, MAX_TEXT_CHARS,
    v1::{
        ClassifyRequest, ClassifyResponse, Disagreements, GetModelInfoRequest, ListDisagreementsRequest, ModelInfo,
        spam_classifier_server::SpamClassifier,
    },
    validate_text,
};
use sms_runtime::trace::{self, Metadata};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    metrics::{Metrics, Protocol},
    model::ModelCard,
    shadow::{Answered, Comparison},
    workers::{InferencePool, PoolError},
};

/// The one serving path of every protocol (sms.v1, the Open Inference Protocol over gRPC
/// and HTTP): the worker pool and its overload bound, the metrics, the shadow's comparison.
pub struct Serving {
    pub pool: Arc<InferencePool>,
    pub metrics: Arc<Metrics>,
    pub source: String,
    /// A shadow's comparison with the serving version, when REFERENCE_VERSION is set.
    pub comparison: Option<Arc<Comparison>>,
    /// Longest a call may take (REQUEST_TIMEOUT_MS); a shorter grpc-timeout wins.
    pub request_timeout: Duration,
    /// The version folder served (MODEL_VERSION), shared by every answer that names it.
    pub model_version: Arc<str>,
    /// Most rows one inference call may carry (MAX_BATCH_ROWS).
    pub max_rows: usize,
}

/// The model's answers to N rows, in their order.
pub struct Answers {
    pub labels: Vec<&'static str>,
    pub spam_probabilities: Vec<f32>,
    pub card: Arc<ModelCard>,
}

impl Serving {
    /// Scores N validated, normalized texts: queued as one call (holding N places in the
    /// queue), counted per row under `protocol`, compared with the reference model's
    /// answers on a shadow, and with the user's guess when the call carried one.
    pub async fn predict(
        &self,
        texts: Vec<String>,
        guess: Option<&'static str>,
        trace_id: &str,
        protocol: Protocol,
    ) -> Result<Answers, Status> {
        // The reference model scores the same normalized texts.
        let compared = self.comparison.is_some().then(|| texts.clone());
        let input_chars: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
        let result = {
            let _inflight = self.metrics.in_flight();
            self.pool.classify_batch(texts).await
        };
        let predictions = result.map_err(|e| match e {
            PoolError::Stopped => Status::unavailable("the model service is shutting down"),
            PoolError::Overloaded => Status::resource_exhausted("the model service is overloaded; retry in a moment"),
            PoolError::Model(e) => Status::internal(e.to_string()),
        })?;
        let card = predictions.card;
        let seconds = predictions.inference_time.as_secs_f64();
        let labels: Vec<&'static str> = predictions
            .spam_probabilities
            .iter()
            .zip(&input_chars)
            .map(|(&p, &chars)| {
                let label = if p >= card.threshold { "spam" } else { "ham" };
                self.metrics.predicted(protocol, label == "spam", seconds);
                self.metrics.scored(protocol, p, chars);
                if let Some(guess) = guess {
                    self.metrics.guessed(guess == label);
                }
                label
            })
            .collect();
        if let (Some(comparison), Some(texts)) = (&self.comparison, compared) {
            let answered = texts
                .into_iter()
                .zip(&labels)
                .zip(&predictions.spam_probabilities)
                .map(|((text, &label), &spam_probability)| Answered {
                    text,
                    label,
                    spam_probability,
                    guess,
                    trace_id: trace_id.to_string(),
                })
                .collect();
            comparison.compare(answered, &self.metrics).await;
        }
        Ok(Answers { labels, spam_probabilities: predictions.spam_probabilities, card })
    }
}

pub struct Classifier {
    pub serving: Arc<Serving>,
}

/// The caller's `grpc-timeout` (e.g. `500m`, `2S`), capped at `longest`.
pub fn deadline(metadata: &tonic::metadata::MetadataMap, longest: Duration) -> Duration {
    let asked = metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(|v| {
        let (amount, unit) = v.split_at(v.len().checked_sub(1)?);
        let amount: u64 = amount.parse().ok()?;
        Some(match unit {
            "H" => Duration::from_secs(amount.saturating_mul(3600)),
            "M" => Duration::from_secs(amount.saturating_mul(60)),
            "S" => Duration::from_secs(amount),
            "m" => Duration::from_millis(amount),
            "u" => Duration::from_micros(amount),
            "n" => Duration::from_nanos(amount),
            _ => return None,
        })
    });
    asked.map_or(longest, |a| a.min(longest))
}

/// The user's guess carried with the call, if it is one (`spam` or `ham`).
pub fn guess_in(metadata: &tonic::metadata::MetadataMap) -> Option<&'static str> {
    parse_guess(metadata.get(GUESS_METADATA).and_then(|v| v.to_str().ok()))
}

/// `spam` or `ham`, the two guesses counted; anything else is no guess.
pub fn parse_guess(value: Option<&str>) -> Option<&'static str> {
    match value {
        Some("spam") => Some("spam"),
        Some("ham") => Some("ham"),
        _ => None,
    }
}

/// The text the model will see, or INVALID_ARGUMENT saying what is wrong.
pub fn validate(text: &str) -> Result<String, Status> {
    validate_text(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

impl Classifier {
    async fn classify_inner(
        &self,
        text: &str,
        guess: Option<&'static str>,
        trace_id: &str,
    ) -> Result<ClassifyResponse, Status> {
        let text = validate(text)?;
        let mut answers = self.serving.predict(vec![text], guess, trace_id, Protocol::Sms).await?;
        let card = &answers.card;
        Ok(ClassifyResponse {
            label: answers.labels[0].into(),
            spam_probability: answers.spam_probabilities.swap_remove(0),
            model_version: card.version.clone(),
            model_name: card.name.clone(),
        })
    }
}

#[tonic::async_trait]
impl SpamClassifier for Classifier {
    async fn classify(&self, request: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let span = tracing::info_span!("classify", otel.name = "sms.v1.SpamClassifier/Classify", otel.kind = "server",
                                       rpc.system = "grpc", source = %self.serving.source);
        let trace = trace::continue_trace(&span, trace::extract(&Metadata(request.metadata())));
        let guess = guess_in(request.metadata());
        // The answer is due by the caller's grpc-timeout or REQUEST_TIMEOUT_MS, whichever
        // comes first; past it the call is answered DEADLINE_EXCEEDED (and its queued job
        // skipped). Every answer is counted by the layer around this service (counting.rs).
        let deadline = deadline(request.metadata(), self.serving.request_timeout);
        let trace_id = trace.trace_id().to_string();
        let answer = self.classify_inner(&request.get_ref().text, guess, &trace_id).instrument(span);
        let result = tokio::time::timeout(deadline, answer).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!("no answer within {} ms", deadline.as_millis())))
        });
        match &result {
            // One line per answer is a debug line: at the chart's `info` a line per call
            // cost much of the throughput (docs/performance.md); the answers are counted in
            // sms_model_predictions_total and traced.
            Ok(r) => tracing::debug!(
                trace_id = %trace.trace_id(), label = %r.label, spam_probability = r.spam_probability,
                model_version = %r.model_version, source = %self.serving.source, "classified"
            ),
            // Overload refusals are counted (sms_model_requests_total) and can come by the
            // thousand a second: not one warning each.
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tracing::debug!(trace_id = %trace.trace_id(), "classify refused: overloaded")
            }
            Err(s) => tracing::warn!(
                trace_id = %trace.trace_id(), code = ?s.code(), message = %s.message(), "classify refused"
            ),
        }
        result.map(Response::new)
    }

    /// Answered by `disagreements::SharedAnswers` in front of this server, from the same
    /// snapshot; this path serves a server built without that layer.
    async fn list_disagreements(
        &self,
        request: Request<ListDisagreementsRequest>,
    ) -> Result<Response<Disagreements>, Status> {
        let Some(comparison) = &self.serving.comparison else {
            return Ok(Response::new(Disagreements::default()));
        };
        let (entries, tail) = comparison.snapshot().answer(request.get_ref().limit as usize);
        let answer = Disagreements::decode(entries.chain(tail)).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(answer))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        let card = self.serving.pool.current_card();
        Ok(Response::new(ModelInfo {
            name: card.name.clone(),
            version: card.version.clone(),
            description: card.description.clone(),
            classes: card.classes.clone(),
            threshold: card.threshold,
            data_sha256: card.data.sha256.clone(),
            metrics: card.metrics.clone().into_iter().collect(),
            loaded_at_unix: card.loaded_at_unix,
            source: self.serving.source.clone(),
            max_text_chars: MAX_TEXT_CHARS as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::metadata::MetadataMap;

    #[test]
    fn the_earlier_of_the_callers_and_the_servers_deadline_wins() {
        let with = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            super::deadline(&m, Duration::from_secs(5))
        };
        assert_eq!(with("250m"), Duration::from_millis(250));
        assert_eq!(with("2S"), Duration::from_secs(2));
        assert_eq!(with("1H"), Duration::from_secs(5));
        assert_eq!(with("junk"), Duration::from_secs(5));
        assert_eq!(with("m"), Duration::from_secs(5));
        assert_eq!(super::deadline(&MetadataMap::new(), Duration::from_secs(5)), Duration::from_secs(5));
    }
}
