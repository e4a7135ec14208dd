//! The app service: the web UI and the HTTP API of the original Spring Boot app, in front
//! of the gRPC model tier.
//!
//! A request's path: `middleware::observe` (trace, metrics, log) -> `post_sms` (JSON or
//! form) -> `classify::Classifier` (validate, cache, count) -> `model_client` (gRPC).

pub mod api;
pub mod cache;
pub mod classify;
pub mod config;
pub mod metrics;
pub mod middleware;
pub mod model_client;
pub mod ui;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    serve::ListenerExt,
};
use sms_proto::trace::TraceContext;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer, timeout::TimeoutLayer};

pub use config::Config;
use {api::ApiError, cache::PredictionCache, classify::Classifier, metrics::Metrics, model_client::ModelClient};

/// Largest request body: a 1,000-character SMS is at most ~4 KB of UTF-8, even escaped.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A strict policy: only this origin's scripts and styles, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub classifier: Arc<Classifier>,
}

pub fn build_state(config: Config, model: ModelClient) -> AppState {
    let cache = config.cache.enabled.then(|| PredictionCache::new(config.cache.ttl, config.cache.max_entries));
    let metrics = Arc::new(Metrics::new(&config.app_version, config.cache.enabled));
    AppState { classifier: Arc::new(Classifier { model, cache, metrics }), config: Arc::new(config) }
}

pub fn router(state: AppState) -> Router {
    let security_headers = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=()"),
    ];
    let mut app = Router::new()
        .route("/", get(|| async { Redirect::temporary("/sms/") }))
        .route("/sms", get(|| async { Redirect::permanent("/sms/") }))
        .route("/sms/", get(ui::index).post(post_sms))
        .route("/static/{name}", get(ui::asset))
        .route("/version", get(api::version))
        .route("/livez", get(api::livez))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CompressionLayer::new());
    for (name, value) in security_headers {
        app = app.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    app.layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10)))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

/// `POST /sms/`: JSON in, JSON out (the API and the page's JavaScript); a plain form post
/// (no JavaScript) gets the HTML page back.
async fn post_sms(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(e.status(), format!("the request body is larger than {MAX_BODY_BYTES} bytes"))
                .into_response();
        }
        Err(e) => return ApiError::new(e.status(), e.body_text()).into_response(),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" => api::classify_json(&state, &body, &trace).await.into_response(),
        "application/x-www-form-urlencoded" => ui::classify_form(&state, &body, &trace).await,
        _ => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send JSON with Content-Type: application/json (got {:?}), e.g. {{\"sms\": \"...\", \"guess\": \"spam\"}}",
                content_type
            ),
        )
        .into_response(),
    }
}

/// A started app. `stop` finishes in-flight requests and shuts down.
pub struct RunningApp {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("app task panicked")?
    }
}

pub async fn start(config: Config) -> anyhow::Result<RunningApp> {
    let model = ModelClient::new(&config.model_host, config.model_timeout, config.resolve_interval)?;
    start_with_model(config, model).await
}

/// `start` with a given model client (tests use one with a fixed address set).
pub async fn start_with_model(config: Config, model: ModelClient) -> anyhow::Result<RunningApp> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP_ADDR)", config.http_addr))?;
    let addr = listener.local_addr()?;
    let app = router(build_state(config, model));
    let (shutdown, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(listener.tap_io(|tcp| drop(tcp.set_nodelay(true))), app)
            .with_graceful_shutdown(async move {
                let _ = rx.changed().await;
            })
            .await
            .context("HTTP server")
    });
    Ok(RunningApp { addr, shutdown, task })
}
