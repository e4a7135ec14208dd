//! Cross-cutting concerns for every HTTP request, each a tower layer with one job:
//! `Observe` (the trace context, continued from the caller's `traceparent` or started
//! here; the request metrics; one access-log line carrying the trace id), `RefuseOversize`
//! (a body declared too large is refused before it is read) and `security_headers`.
//!
//! Hand-written rather than `axum::middleware::from_fn`, which boxes the inner service
//! again for every request: these call the inner service directly, and only `Observe`,
//! whose work goes on after the answer, boxes its future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Response, header},
    response::Response as AxumResponse,
};
use sms_runtime::trace::{self, Headers};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::state::AppState;

/// Scrapes and probes: traced and logged at debug, but not users' requests, so the request
/// metrics (`sms_requests_total`, `sms_request_latency_seconds`, `sms_active_requests`)
/// leave them out and every query, rule and SLO over them counts users' requests as is.
/// Prometheus counts its scrapes (`up`, `scrape_duration_seconds`), the kubelet its probes.
pub fn is_scrape_or_probe(route: &str) -> bool {
    matches!(route, "/metrics" | "/livez" | "/readyz")
}

/// Trace, metrics and access log of every request (the outermost layer).
#[derive(Clone)]
pub struct ObserveLayer(AppState);

impl ObserveLayer {
    pub fn new(state: AppState) -> Self {
        Self(state)
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S, B> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The matched route pattern (a closed set, unlike the path): an `Arc<str>` to share.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let route_str = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let method = request.method().clone();
        let span = tracing::info_span!("request", otel.name = %format!("{method} {route_str}"), otel.kind = "server",
                                       http.request.method = %method, http.route = %route_str);
        let trace = trace::continue_trace(&span, trace::extract(&Headers(request.headers())));
        request.extensions_mut().insert(trace.clone());
        let state = self.state.clone();
        let started = Instant::now();
        let answer = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            let users = !is_scrape_or_probe(route);
            // A guard, so a request cancelled mid-way still leaves the gauge right.
            let active = users.then(|| state.metrics.active_request());
            let mut response = answer.await?;
            let elapsed = started.elapsed();
            drop(active);

            let status = response.status();
            if users {
                state.metrics.request(&method, route, status, elapsed.as_secs_f64());
            }
            if let Ok(id) = HeaderValue::from_str(&trace.trace_id().to_string()) {
                response.headers_mut().insert("x-trace-id", id);
            }
            if !users {
                tracing::debug!(trace_id = %trace.trace_id(), %method, route, status = status.as_u16(), "request");
            } else {
                tracing::info!(
                    trace_id = %trace.trace_id(), %method, route, status = status.as_u16(),
                    latency_ms = elapsed.as_secs_f64() * 1e3, "request"
                );
            }
            Ok(response)
        })
    }
}

/// Answers a request whose declared `Content-Length` is over `limit` with `refusal()`
/// before any of the body is read (a body limit alone would wait for bytes a client may
/// never send).
#[derive(Clone)]
pub struct RefuseOversizeLayer {
    limit: u64,
    refusal: fn() -> AxumResponse,
}

impl RefuseOversizeLayer {
    pub fn new(limit: usize, refusal: fn() -> AxumResponse) -> Self {
        Self { limit: limit as u64, refusal }
    }
}

impl<S> Layer<S> for RefuseOversizeLayer {
    type Service = RefuseOversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOversize { inner, limit: self.limit, refusal: self.refusal }
    }
}

#[derive(Clone)]
pub struct RefuseOversize<S> {
    inner: S,
    limit: u64,
    refusal: fn() -> AxumResponse,
}

impl<S> Service<Request> for RefuseOversize<S>
where
    S: Service<Request, Response = AxumResponse>,
{
    type Response = AxumResponse;
    type Error = S::Error;
    type Future = OrRefused<S::Future, AxumResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limit) {
            return OrRefused::Refused { response: Some((self.refusal)()) };
        }
        OrRefused::Inner { future: self.inner.call(request) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or a refusal ready at once.
    #[project = OrRefusedProjection]
    pub enum OrRefused<F, T> {
        Inner { #[pin] future: F },
        Refused { response: Option<T> },
    }
}

impl<F, T, E> Future for OrRefused<F, T>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OrRefusedProjection::Inner { future } => future.poll(cx),
            OrRefusedProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("OrRefused polled after it answered")))
            }
        }
    }
}

/// The security headers of every answer, set where the handler did not set its own.
pub fn security_headers<B>(mut response: Response<B>) -> Response<B> {
    const POLICY: [(HeaderName, &str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=()"),
    ];
    let headers: &mut HeaderMap = response.headers_mut();
    headers.reserve(POLICY.len() + 1); // and x-trace-id, set by `Observe`
    for (name, value) in POLICY {
        if let header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(HeaderValue::from_static(value));
        }
    }
    response
}

/// A strict policy: only this origin's scripts and styles, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
