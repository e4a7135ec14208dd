//! The HTTP surface: which path goes to which handler, and the layers every request
//! passes (trace and metrics, timeout, security headers, compression, body limit).

use std::time::Duration;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use sms_runtime::trace::SpanContext;
use tower::ServiceBuilder;
use tower_http::{
    compression::{
        CompressionLayer,
        predicate::{DefaultPredicate, Predicate, SizeAbove},
    },
    timeout::TimeoutLayer,
};

use crate::{
    api,
    error::AppError,
    middleware::{self, ObserveLayer, RefuseOversizeLayer},
    state::AppState,
    ui,
};

/// Largest request body: a 1,000-character SMS is at most ~4 KB of UTF-8, even escaped.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Smallest response body worth compressing: gzip makes an API answer (~200 bytes) no
/// smaller, and chunked instead of sized; the page, its assets and /metrics are larger.
const MIN_COMPRESSED_BYTES: u64 = 1024;

/// Longest any request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(state: AppState) -> Router {
    // One stack, applied once: every `Router::layer` call boxes each route again, and each
    // box costs every request clones and allocations (docs/performance.md). Outermost first.
    let layers = ServiceBuilder::new()
        .layer(ObserveLayer::new(state.clone()))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .map_response(middleware::security_headers)
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(SizeAbove::new(MIN_COMPRESSED_BYTES))))
        .layer(RefuseOversizeLayer::new(MAX_BODY_BYTES, || too_large().into_response()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/sms/") }))
        .route("/sms", get(|| async { Redirect::permanent("/sms/") }))
        .route("/sms/", get(ui::index).post(post_sms))
        .route("/static/{name}", get(ui::asset))
        .route("/version", get(api::version))
        .route("/livez", get(api::livez))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(layers)
        .with_state(state)
}

fn too_large() -> AppError {
    AppError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY_BYTES} bytes"))
}

/// `POST /sms/`: JSON in, JSON out (the API and the page's JavaScript); a plain form post
/// (no JavaScript) gets the HTML page back.
async fn post_sms(
    State(state): State<AppState>,
    Extension(trace): Extension<SpanContext>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Classifications beyond the limit are refused at once (503, Retry-After), never
    // queued; pages, probes and /metrics are not limited, so an overloaded app still
    // reports on itself and is not restarted for it.
    let Ok(_in_progress) = state.classifications.try_acquire() else {
        return AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app is busy right now; please try again in a moment",
        )
        .into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large().into_response();
        }
        Err(e) => return AppError::new(e.status(), e.body_text()).into_response(),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" => api::classify_json(&state, &body, &trace).await.into_response(),
        "application/x-www-form-urlencoded" => ui::classify_form(&state, &body, &trace).await,
        _ => AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send JSON with Content-Type: application/json (got {content_type:?}), e.g. {{\"sms\": \"...\", \"guess\": \"spam\"}}"
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{Body, to_bytes},
        http::{Method, Request},
    };
    use tower::ServiceExt;

    use super::*;

    /// The app's router over a model tier that cannot be found.
    fn app() -> Router {
        router(AppState::without_model())
    }

    fn post(content_type: &str, body: &'static str) -> Request<Body> {
        Request::post("/sms/").header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn a_body_declared_too_large_gets_413_and_the_json_error_at_once() {
        let request = Request::post("/sms/")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
            // The body is never read: a client that declares a size and sends nothing is
            // answered all the same.
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"error": "the request body is larger than 16384 bytes", "status": 413})
        );
    }

    #[tokio::test]
    async fn every_answer_has_the_security_headers_and_a_trace_id_errors_included() {
        let too_large = || {
            Request::post("/sms/")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, "100000")
                .body(Body::empty())
                .unwrap()
        };
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
            ("the page", get("/sms/"), StatusCode::OK),
            ("an asset", get("/static/app.js"), StatusCode::OK),
            ("/version", get("/version"), StatusCode::OK),
            ("a redirect", get("/"), StatusCode::TEMPORARY_REDIRECT),
            ("an unknown page", get("/nope"), StatusCode::NOT_FOUND),
            ("an unknown asset", get("/static/nope.js"), StatusCode::NOT_FOUND),
            (
                "a method not served",
                Request::builder().method(Method::DELETE).uri("/sms/").body(Body::empty()).unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ("a body too large", too_large(), StatusCode::PAYLOAD_TOO_LARGE),
            ("not JSON", post("application/json", "{"), StatusCode::BAD_REQUEST),
            ("the wrong media type", post("text/plain", "hello"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("no message", post("application/json", "{}"), StatusCode::UNPROCESSABLE_ENTITY),
            ("the model tier down", post("application/json", r#"{"sms": "hello"}"#), StatusCode::SERVICE_UNAVAILABLE),
            ("not ready", get("/readyz"), StatusCode::SERVICE_UNAVAILABLE),
        ];
        for (what, request, status) in cases {
            let response = app().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{what}");
            let headers = response.headers();
            assert!(
                headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'none'"),
                "{what}"
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
            assert!(headers.contains_key("permissions-policy"), "{what}");
            assert_eq!(headers["x-trace-id"].len(), 32, "{what}");
            if status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                // The project's error: JSON saying what is wrong, with its status.
                assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
                let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if what != "not ready" {
                    assert_eq!(body["status"], status.as_u16(), "{what}: {body}");
                    assert!(!body["error"].as_str().unwrap().is_empty(), "{what}: {body}");
                }
            }
        }
    }
}
