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
use sms_runtime::trace::{self, Headers};
use tracing::Instrument;

use crate::state::AppState;

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!("request", otel.name = %format!("{method} {route}"), otel.kind = "server",
                                   http.request.method = %method, http.route = %route);
    let trace = trace::continue_trace(&span, trace::extract(&Headers(request.headers())));
    request.extensions_mut().insert(trace.clone());
    // A guard, so a request cancelled mid-way still leaves the gauge right.
    let active = state.metrics.active_request();
    let started = Instant::now();
    let mut response = next.run(request).instrument(span).await;
    let elapsed = started.elapsed();
    drop(active);

    let status = response.status();
    state.metrics.request(&method, &route, status, elapsed.as_secs_f64());
    if let Ok(id) = HeaderValue::from_str(&trace.trace_id().to_string()) {
        response.headers_mut().insert("x-trace-id", id);
    }
    let quiet = matches!(route.as_str(), "/metrics" | "/livez" | "/readyz");
    if quiet {
        tracing::debug!(trace_id = %trace.trace_id(), %method, %route, status = status.as_u16(), "request");
    } else {
        tracing::info!(
            trace_id = %trace.trace_id(), %method, %route, status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3, "request"
        );
    }
    response
}
