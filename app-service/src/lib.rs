//! The app service: the web UI and the HTTP API of the original Spring Boot app, in front
//! of the gRPC model tier.
//!
//! A request's path: `routes` (layers, paths) -> `middleware::Observe` (trace, metrics,
//! log) -> `api` or `ui` (JSON or form) -> `classify::Classifier` (validate, cache,
//! count) -> `model_client` (gRPC) -> `model_channel` (HTTP/2 connections). This file
//! only assembles and starts them. Modules import only modules below them
//! (tests/layers.rs keeps it so): lib -> routes -> api, ui, middleware -> state, error ->
//! classify -> cache, metrics -> model_client -> model_channel -> config.

pub mod api;
pub mod cache;
pub mod classify;
pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod model_channel;
pub mod model_client;
pub mod routes;
pub mod state;
pub mod ui;

use std::net::SocketAddr;

use sms_runtime::{
    conn::serve_http,
    server::{Listener, Running, bind},
};

pub use config::Config;
pub use model_client::ModelClient;
pub use state::AppState;

/// A started app (`stop` finishes in-flight requests and shuts down).
pub type RunningApp = Running<Listening>;

/// Where a started app listens, and how it is set up.
#[derive(Debug, Clone)]
pub struct Listening {
    pub addr: SocketAddr,
    pub summary: String,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}, {}", self.addr, self.summary)
    }
}

pub async fn start(config: Config) -> anyhow::Result<RunningApp> {
    config.validate()?;
    // Bound first: an app that cannot listen stops before its model client starts (and logs).
    let listener = bind(config.http_addr, "HTTP", "HTTP_ADDR").await?;
    let model = ModelClient::new(&config.model_host, config.model_timeout, config.resolve_interval)?;
    serve(config, listener, model)
}

/// `start` with a given model client (tests use one with a fixed address set).
pub async fn start_with_model(config: Config, model: ModelClient) -> anyhow::Result<RunningApp> {
    config.validate()?;
    let listener = bind(config.http_addr, "HTTP", "HTTP_ADDR").await?;
    serve(config, listener, model)
}

fn serve(config: Config, listener: Listener, model: ModelClient) -> anyhow::Result<RunningApp> {
    let addr = listener.local_addr()?;
    let summary =
        format!("version {}, model {}, cache enabled {}", config.app_version, config.model_host, config.cache.enabled);
    let limits = config.connections;
    let state = AppState::new(config, model);
    let on_refused = state.metrics.refusals();
    let app = routes::router(state);
    Ok(Running::spawn(Listening { addr, summary }, move |shutdown| async move {
        serve_http(listener, app, limits, shutdown, on_refused).await;
        Ok(())
    }))
}
