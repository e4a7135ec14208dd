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
    metrics::Metrics,
    shadow::{Answered, Comparison},
    workers::{InferencePool, PoolError},
};

pub struct Classifier {
    pub pool: Arc<InferencePool>,
    pub metrics: Arc<Metrics>,
    pub source: String,
    /// A shadow's comparison with the serving version, when REFERENCE_VERSION is set.
    pub comparison: Option<Arc<Comparison>>,
    /// Longest a call may take (REQUEST_TIMEOUT_MS); a shorter grpc-timeout wins.
    pub request_timeout: Duration,
}

/// The caller's `grpc-timeout` (e.g. `500m`, `2S`), capped at `longest`.
fn deadline(metadata: &tonic::metadata::MetadataMap, longest: Duration) -> Duration {
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
fn guess(request: &Request<ClassifyRequest>) -> Option<&'static str> {
    match request.metadata().get(GUESS_METADATA).and_then(|v| v.to_str().ok()) {
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
        trace_id: String,
    ) -> Result<ClassifyResponse, Status> {
        let text = validate(text)?;
        // The reference model scores the same normalized text.
        let compared_text = self.comparison.is_some().then(|| text.clone());
        let result = {
            let _inflight = self.metrics.in_flight();
            self.pool.classify(text).await
        };
        let prediction = result.map_err(|e| match e {
            PoolError::Stopped => Status::unavailable("the model service is shutting down"),
            PoolError::Overloaded => Status::resource_exhausted("the model service is overloaded; retry in a moment"),
            PoolError::Model(e) => Status::internal(e.to_string()),
        })?;
        let card = &prediction.card;
        let label = if prediction.spam_probability >= card.threshold { "spam" } else { "ham" };
        self.metrics.predicted(label == "spam", prediction.inference_time.as_secs_f64());
        if let Some(guess) = guess {
            self.metrics.guessed(guess == label);
        }
        if let (Some(comparison), Some(text)) = (&self.comparison, compared_text) {
            let answered = Answered { text, label, spam_probability: prediction.spam_probability, guess, trace_id };
            comparison.compare(answered, &self.metrics).await;
        }
        Ok(ClassifyResponse {
            label: label.into(),
            spam_probability: prediction.spam_probability,
            model_version: card.version.clone(),
            model_name: card.name.clone(),
        })
    }
}

#[tonic::async_trait]
impl SpamClassifier for Classifier {
    async fn classify(&self, request: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let span = tracing::info_span!("classify", otel.name = "sms.v1.SpamClassifier/Classify", otel.kind = "server",
                                       rpc.system = "grpc", source = %self.source);
        let trace = trace::continue_trace(&span, trace::extract(&Metadata(request.metadata())));
        let guess = guess(&request);
        // The answer is due by the caller's grpc-timeout or REQUEST_TIMEOUT_MS, whichever
        // comes first; past it the call is answered DEADLINE_EXCEEDED (and its queued job
        // skipped). Every answer is counted by the layer around this service (counting.rs).
        let deadline = deadline(request.metadata(), self.request_timeout);
        let answer = self.classify_inner(&request.get_ref().text, guess, trace.trace_id().to_string()).instrument(span);
        let result = tokio::time::timeout(deadline, answer).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!("no answer within {} ms", deadline.as_millis())))
        });
        match &result {
            Ok(r) => tracing::info!(
                trace_id = %trace.trace_id(), label = %r.label, spam_probability = r.spam_probability,
                model_version = %r.model_version, source = %self.source, "classified"
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
        let Some(comparison) = &self.comparison else {
            return Ok(Response::new(Disagreements::default()));
        };
        let (entries, tail) = comparison.snapshot().answer(request.get_ref().limit as usize);
        let answer = Disagreements::decode(entries.chain(tail)).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(answer))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        let card = self.pool.current_card();
        Ok(Response::new(ModelInfo {
            name: card.name.clone(),
            version: card.version.clone(),
            description: card.description.clone(),
            classes: card.classes.clone(),
            threshold: card.threshold,
            data_sha256: card.data.sha256.clone(),
            metrics: card.metrics.clone().into_iter().collect(),
            loaded_at_unix: card.loaded_at_unix,
            source: self.source.clone(),
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
