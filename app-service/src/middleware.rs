//! Cross-cutting concerns for every HTTP request, as one layer: the trace context
//! (continued from the caller's `traceparent` or started here), the request metrics,
//! and one access-log line carrying the trace id.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use sms_proto::{telemetry::continue_trace, trace::TRACEPARENT};
use tracing::Instrument;

use crate::AppState;

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!("request", otel.name = %format!("{method} {route}"), otel.kind = "server",
                                   http.request.method = %method, http.route = %route);
    let trace = continue_trace(&span, request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    request.extensions_mut().insert(trace);
    let metrics = &state.classifier.metrics;
    let version = metrics.version();

    // A guard, so a request cancelled mid-way still leaves the gauge right.
    struct Active<'a>(&'a prometheus::IntGauge);
    impl Drop for Active<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    metrics.active_requests.inc();
    let active = Active(&metrics.active_requests);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span).await;
    let elapsed = started.elapsed();
    drop(active);

    let status = response.status();
    metrics.requests.with_label_values(&[version, method.as_str(), &route, status.as_str()]).inc();
    metrics.latency.with_label_values(&[version, method.as_str(), &route]).observe(elapsed.as_secs_f64());
    if let Ok(id) = HeaderValue::from_str(&trace.trace_id_hex()) {
        response.headers_mut().insert("x-trace-id", id);
    }
    let quiet = matches!(route.as_str(), "/metrics" | "/livez" | "/readyz");
    if quiet {
        tracing::debug!(trace_id = %trace.trace_id_hex(), %method, %route, status = status.as_u16(), "request");
    } else {
        tracing::info!(
            trace_id = %trace.trace_id_hex(), %method, %route, status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3, "request"
        );
    }
    response
}
