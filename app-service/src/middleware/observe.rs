//! `Observe`, the outermost layer: every request's trace (continued from the caller's
//! `traceparent` or started here), its metrics (users' requests only) and its access-log
//! line carrying the trace id.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Response},
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::{
        Extension, Router,
        http::{Method, StatusCode},
        response::Response as AxumResponse,
        routing::get,
    };
    use sms_runtime::trace::SpanContext;
    use tower::ServiceExt;

    use super::super::testing::{request, text};
    use super::*;

    /// An app state whose model tier cannot be found (these layers never call it).
    fn state() -> AppState {
        AppState::without_model()
    }

    // -- Observe: the trace ----------------------------------------------------------------

    /// The routes of these tests behind `Observe`: `/trace` answers the trace context the
    /// handler was given (`trace_id span_id`), `/static/{name}` an asset, `/fail` a 500;
    /// anything else is a 404.
    fn observed(state: &AppState) -> Router {
        Router::new()
            .route(
                "/trace",
                get(|Extension(t): Extension<SpanContext>| async move { format!("{} {}", t.trace_id(), t.span_id()) }),
            )
            .route("/static/{name}", get(|| async { "body { }" }))
            .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(ObserveLayer::new(state.clone()))
    }

    fn trace_id_of(response: &AxumResponse) -> String {
        let id = response.headers().get("x-trace-id").expect("an x-trace-id header").to_str().unwrap().to_string();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        assert_ne!(id, "0".repeat(32));
        id
    }

    #[tokio::test]
    async fn every_answer_carries_a_new_trace_id_when_the_caller_sent_none() {
        let app = observed(&state());
        let mut seen = Vec::new();
        for uri in ["/trace", "/trace", "/static/app.js", "/fail", "/no/such/page"] {
            let response = app.clone().oneshot(request(Method::GET, uri)).await.unwrap();
            let id = trace_id_of(&response);
            if uri == "/trace" {
                // The handler logs and passes on the same trace as the header names.
                assert!(text(response).await.starts_with(&format!("{id} ")), "{uri}");
            }
            seen.push(id);
        }
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "each request starts its own trace: {seen:?}");
    }

    #[tokio::test]
    async fn a_callers_traceparent_is_continued() {
        const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        const CALLER_SPAN: &str = "00f067aa0ba902b7";
        let app = observed(&state());
        for uri in ["/trace", "/fail", "/no/such/page"] {
            let mut r = request(Method::GET, uri);
            r.headers_mut().insert("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").parse().unwrap());
            let response = app.clone().oneshot(r).await.unwrap();
            assert_eq!(trace_id_of(&response), CALLER_TRACE, "{uri}");
            if uri == "/trace" {
                let body = text(response).await;
                let (trace, span) = body.split_once(' ').unwrap();
                assert_eq!(trace, CALLER_TRACE);
                // A span of its own in the caller's trace: the model's call is its child.
                assert!(span.len() == 16 && span != CALLER_SPAN && span != "0".repeat(16), "{span}");
            }
        }
        // A traceparent that is not one is ignored: a trace of its own.
        for bad in ["junk", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6-x-01"] {
            let mut r = request(Method::GET, "/trace");
            r.headers_mut().insert("traceparent", bad.parse().unwrap());
            let response = app.clone().oneshot(r).await.unwrap();
            assert_ne!(trace_id_of(&response), CALLER_TRACE, "{bad}");
        }
    }

    // -- Observe: the metrics --------------------------------------------------------------

    /// `{labels}: value` of every `name` series in a Prometheus text page.
    fn series(page: &str, name: &str) -> BTreeMap<String, f64> {
        page.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
            .map(|rest| {
                let (labels, value) = rest.rsplit_once(' ').unwrap();
                let labels = labels.strip_suffix('}').unwrap();
                (labels.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn metrics_labels_stay_a_closed_set_whatever_the_path_or_method() {
        let state = state();
        let app = observed(&state);
        let calls: Vec<(Method, String)> = [
            (Method::GET, "/static/app.js"),
            (Method::GET, "/static/style.css"),
            (Method::GET, "/static/..%2f..%2fetc%2fpasswd"),
            (Method::GET, "/wp-admin/setup.php"),
            (Method::GET, "/a/b/c?d=e"),
            (Method::POST, "/sms/x"),
            (Method::from_bytes(b"BREW").unwrap(), "/coffee"),
            (Method::from_bytes(b"PROPFIND").unwrap(), "/static/app.js"),
        ]
        .into_iter()
        .map(|(m, p)| (m, p.to_string()))
        .chain((0..50).map(|i| (Method::GET, format!("/random-{i}"))))
        .collect();
        for (method, uri) in calls {
            app.clone().oneshot(request(method, &uri)).await.unwrap();
        }

        let page = state.metrics.render();
        let requests = series(&page, "sms_requests_total");
        let count = |labels: &str| requests.get(labels).copied();
        assert_eq!(
            count(r#"method="GET",route="/static/{name}",status="200",version="v1""#),
            Some(3.0),
            "{requests:#?}"
        );
        // A method the route does not serve is answered there, under the route's pattern.
        assert_eq!(
            count(r#"method="other",route="/static/{name}",status="405",version="v1""#),
            Some(1.0),
            "{requests:#?}"
        );
        assert_eq!(count(r#"method="GET",route="unmatched",status="404",version="v1""#), Some(52.0), "{requests:#?}");
        assert_eq!(count(r#"method="POST",route="unmatched",status="404",version="v1""#), Some(1.0), "{requests:#?}");
        assert_eq!(count(r#"method="other",route="unmatched",status="404",version="v1""#), Some(1.0), "{requests:#?}");
        // Nothing a client chose became a label value: routes are patterns, methods known ones.
        for labels in requests.keys() {
            assert!(
                ["route=\"/static/{name}\"", "route=\"unmatched\"", "route=\"/sms/\""]
                    .iter()
                    .any(|r| labels.contains(r)),
                "{labels}"
            );
            assert!(!labels.contains("BREW") && !labels.contains("PROPFIND"), "{labels}");
        }
        assert!(!page.contains("random-") && !page.contains("wp-admin") && !page.contains("app.js"), "{page}");
        // The latency histogram has the same closed set of labels.
        let latency = series(&page, "sms_request_latency_seconds_count");
        assert_eq!(
            latency.keys().collect::<Vec<_>>(),
            [
                r#"method="GET",route="/static/{name}",version="v1""#,
                r#"method="GET",route="unmatched",version="v1""#,
                r#"method="POST",route="unmatched",version="v1""#,
                r#"method="other",route="/static/{name}",version="v1""#,
                r#"method="other",route="unmatched",version="v1""#,
            ],
            "{page}"
        );
        assert_eq!(latency.values().sum::<f64>(), 58.0);
        // No request is left counted as in progress.
        assert_eq!(series(&page, "sms_active_requests").values().collect::<Vec<_>>(), [&0.0]);
    }
}
