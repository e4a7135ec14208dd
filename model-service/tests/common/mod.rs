//! One helper to start the real model service on 127.0.0.1 port 0 and talk to it.
#![allow(dead_code)]

pub mod files;
pub mod oip;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use model_service::{Config, RunningServer};
use sms_proto::v1::spam_classifier_client::SpamClassifierClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub fn repo_models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// ORT_DYLIB_PATH must point at libonnxruntime (scripts/test-rust.sh sets it).
pub fn ort_dylib() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .expect("ORT_DYLIB_PATH is not set: run the tests through `make test` (it fetches ONNX Runtime)");
    assert!(path.is_file(), "ORT_DYLIB_PATH={} does not exist", path.display());
    path
}

pub fn test_config(version: &str) -> Config {
    Config {
        model_root: repo_models(),
        model_version: version.into(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        inference_http_addr: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        reload_interval: None,
        ort_dylib: Some(ort_dylib()),
        ..Config::default()
    }
}

pub struct TestModel {
    pub server: RunningServer,
    pub client: SpamClassifierClient<Channel>,
}

impl TestModel {
    pub async fn start(config: Config) -> Self {
        let server = model_service::start(config).await.expect("model service starts");
        let client = SpamClassifierClient::new(channel(server.grpc_addr).await);
        Self { server, client }
    }

    pub async fn version(version: &str) -> Self {
        Self::start(test_config(version)).await
    }

    pub async fn metrics(&self) -> String {
        http_get(self.server.metrics_addr, "/metrics").await
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the model service")
}

/// A minimal HTTP/1.1 GET (no client library needed for one plain-text endpoint).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "GET {path}: {}", body.lines().next().unwrap_or(""));
        body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("GET timed out")
}

#[allow(unused_imports)]
pub use sms_runtime::telemetry::sample_value as sample;

pub const SPAM: &str = "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only.";
pub const HAM: &str = "Hey, are we still meeting for lunch tomorrow? Let me know what time works for you.";
