//! The app's gRPC client for the model tier. Every call carries a deadline and the W3C
//! `traceparent`; the connections, their balancing and the address lookup are
//! `model_channel`'s.

use std::{sync::Arc, time::Duration};

use sms_proto::{
    GUESS_METADATA, MAX_GRPC_MESSAGE_BYTES,
    v1::{ClassifyRequest, ClassifyResponse, spam_classifier_client::SpamClassifierClient},
};
use sms_runtime::trace::{self, MetadataMut, SpanContext};
use tonic::{Code, transport::Uri};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::model_channel::{ModelChannel, Resolver};

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub label: String,
    pub spam_probability: f32,
    pub model_version: String,
    pub model_name: String,
}

impl Classification {
    /// The model's answer, if it is one the app can show: a known label and a
    /// probability in [0, 1]. Anything else is the model tier's fault, not the user's.
    fn from_answer(r: ClassifyResponse) -> Result<Self, ModelCallError> {
        let malformed = |what: String| Err(ModelCallError::Failed(format!("malformed answer from the model: {what}")));
        if !matches!(r.label.as_str(), "spam" | "ham") {
            return malformed(format!("label {:?}", r.label));
        }
        if !(0.0..=1.0).contains(&r.spam_probability) {
            return malformed(format!("spam_probability {}", r.spam_probability));
        }
        Ok(Self {
            label: r.label,
            spam_probability: r.spam_probability,
            model_version: r.model_version,
            model_name: r.model_name,
        })
    }
}

#[derive(Debug)]
pub enum ModelCallError {
    /// The model tier cannot be reached or is not serving (connection refused, DNS, ...).
    Unavailable(String),
    /// No answer within the deadline.
    Timeout,
    /// The model refused the input (should not happen: the app validates first).
    Rejected(String),
    /// Anything else the model answered with.
    Failed(String),
}

impl ModelCallError {
    /// The `outcome` label of `sms_model_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout => "timeout",
            Self::Rejected(_) | Self::Failed(_) => "error",
        }
    }
}

#[derive(Clone)]
pub struct ModelClient {
    classifier: SpamClassifierClient<ModelChannel>,
    health: HealthClient<ModelChannel>,
    timeout: Duration,
}

impl ModelClient {
    /// Connects lazily (the app starts, and stays up, while the model is down) and keeps
    /// the address set of `model_host` up to date in the background through DNS.
    pub fn new(model_host: &str, timeout: Duration, resolve_every: Duration) -> anyhow::Result<Self> {
        let uri: Uri =
            if model_host.contains("://") { model_host.parse()? } else { format!("http://{model_host}").parse()? };
        let host = uri.host().ok_or_else(|| anyhow::anyhow!("MODEL_HOST {model_host:?} has no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(8081);
        let authority = format!("{host}:{port}");
        let resolve: Resolver = Arc::new(move || {
            let (host, port) = (host.clone(), port);
            Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
        });
        Ok(Self::with_resolver(authority, resolve, timeout, resolve_every))
    }

    /// Like `new`, with the address lookup given (tests use a fixed set of servers).
    pub fn with_resolver(authority: String, resolve: Resolver, timeout: Duration, resolve_every: Duration) -> Self {
        let channel = ModelChannel::new(authority, resolve, timeout, resolve_every);
        let origin = channel.origin();
        Self {
            classifier: SpamClassifierClient::with_origin(channel.clone(), origin.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            health: HealthClient::with_origin(channel, origin),
            timeout,
        }
    }

    /// Classifies `text`; `guess` (`spam` or `ham`), the user's, travels along as metadata
    /// so every model that sees the call (the shadow too) can count agreement with users.
    pub async fn classify(
        &self,
        text: String,
        guess: Option<&'static str>,
        context: &SpanContext,
    ) -> Result<Classification, ModelCallError> {
        // The outer timeout bounds everything, waiting for a connection and a resend included.
        let call = async {
            let mut answer = self.call(text.clone(), guess, context).await;
            // A stream the model refused unprocessed (a burst opened before its limit of
            // streams a connection was known: every fresh connection) is sent again, once,
            // as gRPC's transparent retry does; the model never saw it.
            if answer.as_ref().is_err_and(refused_unprocessed) {
                answer = self.call(text, guess, context).await;
            }
            answer
        };
        let answer = tokio::time::timeout(self.timeout, call).await.ok();
        read_answer(answer.map(|a| a.map(tonic::Response::into_inner)))
    }

    async fn call(
        &self,
        text: String,
        guess: Option<&'static str>,
        context: &SpanContext,
    ) -> Result<tonic::Response<ClassifyResponse>, tonic::Status> {
        let mut request = tonic::Request::new(ClassifyRequest { text });
        request.set_timeout(self.timeout);
        trace::inject(context, &mut MetadataMut(request.metadata_mut()));
        if let Some(guess) = guess {
            request.metadata_mut().insert(GUESS_METADATA, tonic::metadata::MetadataValue::from_static(guess));
        }
        self.classifier.clone().classify(request).await
    }

    /// Whether the model tier answers its health check as SERVING within the deadline.
    pub async fn is_serving(&self) -> Result<(), String> {
        let mut health = self.health.clone();
        let mut request = tonic::Request::new(HealthCheckRequest { service: "sms.v1.SpamClassifier".into() });
        request.set_timeout(self.timeout);
        match tokio::time::timeout(self.timeout, health.check(request)).await {
            Err(_) => Err("the model service did not answer its health check in time".into()),
            Ok(Err(s)) => Err(format!("the model service is unreachable: {}", s.message())),
            Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving => Ok(()),
            Ok(Ok(r)) => Err(format!("the model service reports {:?}", r.get_ref().status())),
        }
    }
}

/// What one call came to: the model's answer, or the kind of failure (which decides the
/// app's answer: `error.rs`). `None`: no answer within the deadline.
fn read_answer(answer: Option<Result<ClassifyResponse, tonic::Status>>) -> Result<Classification, ModelCallError> {
    match answer {
        None => Err(ModelCallError::Timeout),
        Some(Ok(r)) => Classification::from_answer(r),
        // A status the transport made (connection reset, GOAWAY, broken pipe: the model
        // crashed, stalled or restarted) carries its cause; one the model answered does
        // not. The first kind is the tier being unavailable (503), never a 502.
        Some(Err(s)) if made_by_transport(&s) => Err(ModelCallError::Unavailable(s.message().to_string())),
        Some(Err(s)) => Err(match s.code() {
            // Down, or refusing work it cannot take now: either way a 503 to retry.
            Code::Unavailable | Code::ResourceExhausted => ModelCallError::Unavailable(s.message().to_string()),
            Code::DeadlineExceeded | Code::Cancelled => ModelCallError::Timeout,
            Code::InvalidArgument => ModelCallError::Rejected(s.message().to_string()),
            _ => ModelCallError::Failed(format!("{:?}: {}", s.code(), s.message())),
        }),
    }
}

/// Whether the model refused the call's stream before processing it (HTTP/2
/// REFUSED_STREAM, somewhere in the status's chain of sources).
fn refused_unprocessed(status: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        if err.downcast_ref::<h2::Error>().is_some_and(|e| e.reason() == Some(h2::Reason::REFUSED_STREAM)) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Whether the transport made this status (it carries the I/O or HTTP/2 error as its
/// source), as opposed to the model answering it. Deadlines are timeouts, not outages.
fn made_by_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some() && !matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
}

#[cfg(test)]
mod tests {
    use std::{error::Error, fmt, io, sync::Arc};

    use super::*;

    /// How a call ended, as `read_answer` takes it.
    type End = Option<Result<ClassifyResponse, tonic::Status>>;

    /// A status as the model would answer it (no source: it came over the wire).
    fn answered(code: Code, message: &str) -> End {
        Some(Err(tonic::Status::new(code, message)))
    }

    /// A status as tonic's transport makes it from a failure under the call.
    fn made_from(cause: impl Error + Send + Sync + 'static) -> tonic::Status {
        tonic::Status::from_error(Box::new(cause))
    }

    fn answer(label: &str, spam_probability: f32) -> End {
        Some(Ok(ClassifyResponse {
            label: label.into(),
            spam_probability,
            model_version: "v1".into(),
            model_name: "sms-spam-v1".into(),
        }))
    }

    /// An error that carries another one as its source (a transport error wrapping the
    /// HTTP/2 one, as hyper's do).
    #[derive(Debug)]
    struct Wrapping(h2::Error);

    impl fmt::Display for Wrapping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "connection error")
        }
    }

    impl Error for Wrapping {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The kind of a result, its `sms_model_calls_total` outcome, and its message.
    fn kind(result: &Result<Classification, ModelCallError>) -> (&'static str, &'static str, String) {
        match result {
            Ok(c) => ("ok", "ok", format!("{} {}", c.label, c.spam_probability)),
            Err(e @ ModelCallError::Unavailable(m)) => ("unavailable", e.outcome(), m.clone()),
            Err(e @ ModelCallError::Timeout) => ("timeout", e.outcome(), String::new()),
            Err(e @ ModelCallError::Rejected(m)) => ("rejected", e.outcome(), m.clone()),
            Err(e @ ModelCallError::Failed(m)) => ("failed", e.outcome(), m.clone()),
        }
    }

    #[test]
    fn every_way_a_call_ends_has_its_kind() {
        let deadline_with_cause = {
            let mut s = tonic::Status::deadline_exceeded("Timeout expired");
            s.set_source(Arc::new(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
            s
        };
        let reset = made_from(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"));
        let go_away = made_from(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        let refused = made_from(h2::Error::from(h2::Reason::REFUSED_STREAM));
        let enhance_your_calm = made_from(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM));
        // (what happened, the call's end, kind, outcome label, start of the message)
        let cases: Vec<(&str, End, &str, &str, &str)> = vec![
            ("no answer within the deadline", None, "timeout", "timeout", ""),
            ("a spam answer", answer("spam", 0.97), "ok", "ok", "spam 0.97"),
            ("a ham answer at probability 0", answer("ham", 0.0), "ok", "ok", "ham 0"),
            ("a spam answer at probability 1", answer("spam", 1.0), "ok", "ok", "spam 1"),
            (
                "an unknown label",
                answer("SPAM", 0.5),
                "failed",
                "error",
                "malformed answer from the model: label \"SPAM\"",
            ),
            ("an empty label", answer("", 0.5), "failed", "error", "malformed answer from the model: label \"\""),
            (
                "a probability above 1",
                answer("spam", 1.5),
                "failed",
                "error",
                "malformed answer from the model: spam_probability 1.5",
            ),
            (
                "a negative probability",
                answer("ham", -0.1),
                "failed",
                "error",
                "malformed answer from the model: spam_probability -0.1",
            ),
            (
                "a probability that is not a number",
                answer("ham", f32::NAN),
                "failed",
                "error",
                "malformed answer from the model: spam_probability NaN",
            ),
            // The model answered a status.
            ("UNAVAILABLE", answered(Code::Unavailable, "draining"), "unavailable", "unavailable", "draining"),
            (
                "RESOURCE_EXHAUSTED (queue full)",
                answered(Code::ResourceExhausted, "every inference worker is busy"),
                "unavailable",
                "unavailable",
                "every inference worker is busy",
            ),
            ("DEADLINE_EXCEEDED", answered(Code::DeadlineExceeded, "late"), "timeout", "timeout", ""),
            ("CANCELLED", answered(Code::Cancelled, "cancelled"), "timeout", "timeout", ""),
            (
                "INVALID_ARGUMENT",
                answered(Code::InvalidArgument, "the message is empty"),
                "rejected",
                "error",
                "the message is empty",
            ),
            ("INTERNAL", answered(Code::Internal, "inference failed"), "failed", "error", "Internal: inference failed"),
            ("UNKNOWN", answered(Code::Unknown, "?"), "failed", "error", "Unknown: ?"),
            (
                "UNIMPLEMENTED",
                answered(Code::Unimplemented, "no such method"),
                "failed",
                "error",
                "Unimplemented: no such method",
            ),
            ("NOT_FOUND", answered(Code::NotFound, "no model"), "failed", "error", "NotFound: no model"),
            (
                "FAILED_PRECONDITION",
                answered(Code::FailedPrecondition, "x"),
                "failed",
                "error",
                "FailedPrecondition: x",
            ),
            ("PERMISSION_DENIED", answered(Code::PermissionDenied, "x"), "failed", "error", "PermissionDenied: x"),
            ("DATA_LOSS", answered(Code::DataLoss, "x"), "failed", "error", "DataLoss: x"),
            // The transport made the status: the model crashed, stalled or restarted.
            ("a connection reset", Some(Err(reset)), "unavailable", "unavailable", "connection reset by peer"),
            (
                "an HTTP/2 INTERNAL_ERROR (GOAWAY)",
                Some(Err(go_away)),
                "unavailable",
                "unavailable",
                "h2 protocol error",
            ),
            ("a stream refused twice", Some(Err(refused)), "unavailable", "unavailable", "h2 protocol error"),
            ("ENHANCE_YOUR_CALM", Some(Err(enhance_your_calm)), "unavailable", "unavailable", "h2 protocol error"),
            // A deadline is a timeout even when the transport made it.
            ("a deadline the transport made", Some(Err(deadline_with_cause)), "timeout", "timeout", ""),
        ];
        for (what, end, want_kind, want_outcome, want_message) in cases {
            let (kind, outcome, message) = kind(&read_answer(end));
            assert_eq!((kind, outcome), (want_kind, want_outcome), "{what}: {message}");
            assert!(message.starts_with(want_message), "{what}: message {message:?}, want {want_message:?}...");
        }
    }

    #[test]
    fn an_answer_keeps_what_the_model_said() {
        let c = read_answer(answer("spam", 0.75)).unwrap();
        assert_eq!(
            c,
            Classification {
                label: "spam".into(),
                spam_probability: 0.75,
                model_version: "v1".into(),
                model_name: "sms-spam-v1".into()
            }
        );
    }

    #[test]
    fn only_a_stream_refused_unprocessed_is_sent_again() {
        let refused = made_from(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert!(refused_unprocessed(&refused));
        // Found however deep in the chain of causes.
        assert!(refused_unprocessed(&made_from(Wrapping(h2::Error::from(h2::Reason::REFUSED_STREAM)))));
        for other in [
            made_from(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            made_from(h2::Error::from(h2::Reason::CANCEL)),
            made_from(Wrapping(h2::Error::from(h2::Reason::PROTOCOL_ERROR))),
            made_from(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
            // The model may have seen it: never resent.
            tonic::Status::unavailable("REFUSED_STREAM"),
        ] {
            assert!(!refused_unprocessed(&other), "{other:?}");
        }
    }
}
