//! Configuration from environment variables (12-factor), each with a default that runs
//! on one machine. The names are listed in docs/contracts.md.

use std::{env, net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Clone)]
pub struct Config {
    /// Folder holding `<version>/model.onnx` and `<version>/model.json`.
    pub model_root: PathBuf,
    /// The version folder to serve, e.g. `v1`.
    pub model_version: String,
    /// The metrics `source` label: `app` (serving) or `shadow` (mirror target).
    pub source: String,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Fixed number of inference threads, each owning one ONNX Runtime session.
    pub workers: usize,
    /// How often to look for new model files; `None` disables hot reload.
    pub reload_interval: Option<Duration>,
    /// Path of libonnxruntime.so; `None` lets the dynamic loader search for it.
    pub ort_dylib: Option<PathBuf>,
    /// Longest a request may wait in the queue plus run before it fails with
    /// DEADLINE_EXCEEDED (clients may set a shorter grpc-timeout).
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model_root: PathBuf::from("models"),
            model_version: "v1".into(),
            source: "app".into(),
            grpc_addr: ([0, 0, 0, 0], 8081).into(),
            metrics_addr: ([0, 0, 0, 0], 9464).into(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            reload_interval: Some(Duration::from_secs(5)),
            ort_dylib: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let reload_secs: u64 = parse("MODEL_RELOAD_SECS", 5)?;
        let config = Self {
            model_root: env::var_os("MODEL_ROOT").map_or(d.model_root, PathBuf::from),
            model_version: var("MODEL_VERSION").unwrap_or(d.model_version),
            source: var("METRICS_SOURCE").unwrap_or(d.source),
            grpc_addr: parse("GRPC_ADDR", d.grpc_addr)?,
            metrics_addr: parse("METRICS_ADDR", d.metrics_addr)?,
            workers: parse("INFERENCE_WORKERS", d.workers)?,
            reload_interval: (reload_secs > 0).then(|| Duration::from_secs(reload_secs)),
            ort_dylib: env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            request_timeout: Duration::from_millis(parse("REQUEST_TIMEOUT_MS", 5000)?),
        };
        // `start` validates, for configurations built in code as well.
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.workers >= 1, "INFERENCE_WORKERS must be at least 1");
        anyhow::ensure!(
            !self.model_version.is_empty() && !self.model_version.contains(['/', '\\']) && self.model_version != "..",
            "MODEL_VERSION must be a folder name under MODEL_ROOT, got {:?}",
            self.model_version
        );
        anyhow::ensure!(
            matches!(self.source.as_str(), "app" | "shadow"),
            "METRICS_SOURCE must be `app` or `shadow`, got {:?}",
            self.source
        );
        Ok(())
    }

    pub fn model_dir(&self) -> PathBuf {
        self.model_root.join(&self.model_version)
    }
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}
