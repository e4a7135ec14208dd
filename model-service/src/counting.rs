//! Every Classify call counted by the code it was answered with, in one place: the gRPC
//! status the response carries (in its headers when tonic answers at once, as it does for a
//! request that does not decode, or in its trailers), and `Cancelled` when the caller went
//! away before any answer or broke off its request (a reset stream, a closed connection:
//! tonic would answer those Unknown to nobody). The handler's own outcomes and the codec's refusals are counted
//! alike, so `sms_model_requests_total` holds every call.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderValue};
use tonic::{Code, body::Body, server::NamedService};

use crate::metrics::Metrics;

const CLASSIFY: &str = "/sms.v1.SpamClassifier/Classify";

/// Wraps the classifier's gRPC service (tonic's generated server).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S: NamedService> NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Counted<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != CLASSIFY {
            return Box::pin(self.inner.call(request));
        }
        let caller_gone = Arc::new(AtomicBool::new(false));
        let (parts, body) = request.into_parts();
        let gone = caller_gone.clone();
        let body = Watched::body(body, move |frame: &Frame| {
            if matches!(frame, Some(Err(_))) {
                gone.store(true, Ordering::Relaxed);
            }
        });
        let answer = self.inner.call(http::Request::from_parts(parts, body));
        let outcome = Outcome { metrics: Some(self.metrics.clone()), caller_gone };
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(code) = answered_code(response.headers_mut()) {
                outcome.record(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let mut outcome = Some(outcome);
            let body = Watched::body(body, move |frame: &Frame| {
                let trailers = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(http_body::Frame::trailers_ref);
                if let Some(code) = trailers.and_then(|t| t.get("grpc-status")).map(|s| Code::from_bytes(s.as_bytes()))
                    && let Some(outcome) = outcome.take()
                {
                    outcome.record(code);
                }
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The code in `grpc-status`, if present. A request whose frame claims compression that
/// was never negotiated is the caller's mistake: tonic answers it INTERNAL, the contract
/// says INVALID_ARGUMENT, so it is answered (and counted) as that.
fn answered_code(headers: &mut HeaderMap) -> Option<Code> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    if code == Code::Internal && message.contains("compressed-flag") {
        headers.insert("grpc-status", HeaderValue::from(Code::InvalidArgument as i32));
        return Some(Code::InvalidArgument);
    }
    Some(code)
}

/// Records one call's code exactly once; a call dropped unanswered, or whose caller broke
/// off its request, counts as Cancelled.
struct Outcome {
    metrics: Option<Arc<Metrics>>,
    caller_gone: Arc<AtomicBool>,
}

impl Outcome {
    fn record(mut self, code: Code) {
        if let Some(m) = self.metrics.take() {
            m.answered(if self.caller_gone.load(Ordering::Relaxed) { Code::Cancelled } else { code });
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.answered(Code::Cancelled);
        }
    }
}

type Frame = Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>;

/// A body whose frames `watch` sees as they pass: the request's, for the caller breaking it
/// off; the response's, for the trailers that carry the status.
struct Watched<F> {
    inner: Body,
    watch: F,
}

impl<F: FnMut(&Frame) + Send + Unpin + 'static> Watched<F> {
    fn body(inner: Body, watch: F) -> Body {
        Body::new(Self { inner, watch })
    }
}

impl<F: FnMut(&Frame) + Send + Unpin + 'static> http_body::Body for Watched<F> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Frame> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        (this.watch)(&frame);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
