//! One helper to start the real model service and the real app on 127.0.0.1 port 0
//! (and, in `fake_model`, a stand-in model for failure paths).
#![allow(dead_code)]

pub mod fake_model;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use app_service::{Config, ModelClient, RunningApp, config::CacheConfig, model_channel::Resolver};
use model_service::RunningServer;

pub const SPAM: &str = "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only.";
pub const HAM: &str = "Hey, are we still meeting for lunch tomorrow? Let me know what time works for you.";

pub fn model_config(grpc_addr: SocketAddr) -> model_service::Config {
    let ort = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .expect("ORT_DYLIB_PATH is not set: run the tests through `make test` (it fetches ONNX Runtime)");
    model_service::Config {
        model_root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        grpc_addr,
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        inference_http_addr: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        reload_interval: None,
        ort_dylib: Some(ort),
        ..Default::default()
    }
}

pub async fn start_model(grpc_addr: SocketAddr) -> RunningServer {
    model_service::start(model_config(grpc_addr)).await.expect("model service starts")
}

pub struct TestApp {
    pub app: RunningApp,
    pub model: Option<RunningServer>,
    pub model_addr: SocketAddr,
    pub http: reqwest::Client,
}

impl TestApp {
    /// Model v1 and an app (cache on or off) talking to it.
    pub async fn start(cache: bool) -> Self {
        let model = start_model("127.0.0.1:0".parse().unwrap()).await;
        let model_addr = model.grpc_addr;
        let app = app_service::start(app_config(model_addr, cache)).await.expect("app starts");
        Self { app, model: Some(model), model_addr, http: http_client() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.addr)
    }

    pub async fn post_json(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.http.post(self.url("/sms/")).json(&body).send().await.expect("POST /sms/");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON answer"))
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn model_metrics(&self) -> String {
        let addr = self.model.as_ref().expect("model running").metrics_addr;
        self.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn stop(mut self) {
        self.app.stop().await.unwrap();
        if let Some(m) = self.model.take() {
            m.stop().await.unwrap();
        }
    }
}

/// An app (cache off) whose model is a set of replicas behind one name, as a headless
/// Service gives it: the name resolves to what `addresses` holds at the time, asked
/// every `resolve_every`.
pub async fn start_app_over_replicas(addresses: Arc<Mutex<Vec<SocketAddr>>>, resolve_every: Duration) -> RunningApp {
    let config = app_config(addresses.lock().unwrap()[0], false);
    let resolve: Resolver = Arc::new(move || {
        let now = addresses.lock().unwrap().clone();
        Box::pin(async move { Ok(now) })
    });
    let timeout = config.model_timeout;
    let client = ModelClient::with_resolver("sms-app-model-headless:8081".into(), resolve, timeout, resolve_every);
    app_service::start_with_model(config, client).await.expect("app starts")
}

/// The spam predictions a model service made, from its metrics page.
pub async fn spam_predictions(http: &reqwest::Client, metrics_addr: SocketAddr) -> f64 {
    let m = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    sample(&m, "sms_model_predictions_total", &[("result", "spam"), ("protocol", "sms")]).unwrap()
}

pub fn app_config(model_addr: SocketAddr, cache: bool) -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        model_host: format!("http://{model_addr}"),
        app_version: if cache { "v2" } else { "v1" }.into(),
        model_timeout: Duration::from_millis(500),
        cache: CacheConfig { enabled: cache, ttl: Duration::from_secs(60), max_entries: 100 },
        ..Default::default()
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub use sms_runtime::telemetry::sample_value as sample;
