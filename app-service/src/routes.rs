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
