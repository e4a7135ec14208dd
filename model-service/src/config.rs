//! The model service's settings: environment variables (12-factor) with defaults that
//! run on one machine, each default stated once (in `Default`). The names are listed in
//! docs/contracts.md. `start` validates, so configurations built in code (the tests) are
//! checked by the same rules as the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::budget::MemoryBudget;
use sms_runtime::{conn::ConnLimits, server::cores, settings, telemetry::TelemetryConfig};

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
    /// The Open Inference Protocol's HTTP/JSON endpoints (`/v2/...`); its gRPC form is
    /// served on `grpc_addr`.
    pub inference_http_addr: SocketAddr,
    /// Most rows (texts) one Open Inference Protocol call may carry; a call also holds one
    /// place in the queue per row, so the bound in force is at most the queue's rows
    /// (INFERENCE_WORKERS x QUEUE_PER_WORKER).
    pub max_batch_rows: usize,
    /// Fixed number of inference threads, each owning one ONNX Runtime session.
    pub workers: usize,
    /// Threads that serve gRPC and metrics (the tokio runtime's workers).
    pub runtime_threads: usize,
    /// Calls that may wait for a worker, per worker; more are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing without bound.
    pub queue_per_worker: usize,
    /// How often to look for new model files; `None` disables hot reload.
    pub reload_interval: Option<Duration>,
    /// Path of libonnxruntime.so; `None` lets the dynamic loader search for it.
    pub ort_dylib: Option<PathBuf>,
    /// Longest a request may wait in the queue plus run before it fails with
    /// DEADLINE_EXCEEDED (clients may set a shorter grpc-timeout).
    pub request_timeout: Duration,
    /// The version this server also scores every call with and compares against (a
    /// shadow's serving version), from the same MODEL_ROOT; `None`: no comparison.
    pub reference_version: Option<String>,
    /// How many recent disagreements with the reference are kept for ListDisagreements.
    pub disagreements_kept: usize,
    /// Whether those keep the message text (SMS texts are personal data: off by default).
    pub disagreement_texts: bool,
    /// The process's memory limit (MiB): a model whose load would take the process past
    /// 90 % of it is refused before it is read. `None`: the cgroup's limit, if any.
    pub memory_limit_mib: Option<u64>,
    /// Idle timeout (HTTP/2 preface, metrics keep-alives) and shutdown bound of both listeners.
    pub connections: ConnLimits,
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        let cores = cores();
        Self {
            model_root: PathBuf::from("models"),
            model_version: "v1".into(),
            source: "app".into(),
            grpc_addr: ([0, 0, 0, 0], 8081).into(),
            metrics_addr: ([0, 0, 0, 0], 9464).into(),
            inference_http_addr: ([0, 0, 0, 0], 8082).into(),
            max_batch_rows: 64,
            // The cores split between serving and inference, so neither set of threads
            // preempts the other (the chart's 1 CPU gives 1 + 1 as well): faster and with a
            // shorter tail than both sets on every core (docs/performance.md).
            workers: cores.div_ceil(2),
            runtime_threads: (cores / 2).max(1),
            // A few tens of milliseconds of work waiting per core at most.
            queue_per_worker: 64,
            reload_interval: Some(Duration::from_secs(5)),
            ort_dylib: None,
            request_timeout: Duration::from_secs(5),
            reference_version: None,
            disagreements_kept: 100,
            disagreement_texts: false,
            memory_limit_mib: None,
            // Every call a connection opens is admitted (up to 32), and the server answers
            // the admitted calls in turn: under a flood, a call waits about (connections x
            // 32) / (answers a second) before it is answered or refused, so the bound keeps
            // that wait a fraction of a second on two cores (docs/performance.md). The
            // model's callers are a few app replicas and their sidecars, each holding a
            // connection or two.
            connections: ConnLimits { max_connections: 128, ..ConnLimits::default() },
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// The settings `env` gives (the process's: `Env::process()`), each unset one at its
    /// default.
    pub fn read(env: &settings::Env<impl Fn(&str) -> Option<String>>) -> anyhow::Result<Self> {
        let d = Self::default();
        // 0 turns hot reload off.
        let reload = env.secs("MODEL_RELOAD_SECS", d.reload_interval.unwrap_or(Duration::ZERO))?;
        Ok(Self {
            model_root: env.text("MODEL_ROOT").map_or(d.model_root, PathBuf::from),
            model_version: env.text("MODEL_VERSION").unwrap_or(d.model_version),
            source: env.text("METRICS_SOURCE").unwrap_or(d.source),
            grpc_addr: env.parse("GRPC_ADDR", d.grpc_addr)?,
            metrics_addr: env.parse("METRICS_ADDR", d.metrics_addr)?,
            inference_http_addr: env.parse("INFERENCE_HTTP_ADDR", d.inference_http_addr)?,
            max_batch_rows: env.parse("MAX_BATCH_ROWS", d.max_batch_rows)?,
            workers: env.parse("INFERENCE_WORKERS", d.workers)?,
            runtime_threads: env.parse("RUNTIME_THREADS", d.runtime_threads)?,
            queue_per_worker: env.parse("QUEUE_PER_WORKER", d.queue_per_worker)?,
            reload_interval: (!reload.is_zero()).then_some(reload),
            ort_dylib: env.text("ORT_DYLIB_PATH").map(PathBuf::from).or(d.ort_dylib),
            request_timeout: env.millis("REQUEST_TIMEOUT_MS", d.request_timeout)?,
            reference_version: env.text("REFERENCE_VERSION").or(d.reference_version),
            disagreements_kept: env.parse("DISAGREEMENTS_KEPT", d.disagreements_kept)?,
            disagreement_texts: env.flag("DISAGREEMENT_TEXTS", d.disagreement_texts)?,
            memory_limit_mib: env
                .text("MEMORY_LIMIT_MIB")
                .map(|_| env.parse("MEMORY_LIMIT_MIB", 0u64))
                .transpose()?
                .or(d.memory_limit_mib),
            connections: ConnLimits::read(env, d.connections)?,
            telemetry: TelemetryConfig::read(env)?,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.workers >= 1, "INFERENCE_WORKERS must be at least 1");
        anyhow::ensure!(self.runtime_threads >= 1, "RUNTIME_THREADS must be at least 1");
        anyhow::ensure!(
            (1..=10_000).contains(&self.queue_per_worker),
            "QUEUE_PER_WORKER must be between 1 and 10000, got {}",
            self.queue_per_worker
        );
        anyhow::ensure!(
            (1..=4096).contains(&self.max_batch_rows),
            "MAX_BATCH_ROWS must be between 1 and 4096, got {}",
            self.max_batch_rows
        );
        for (setting, version) in
            [("MODEL_VERSION", Some(&self.model_version)), ("REFERENCE_VERSION", self.reference_version.as_ref())]
        {
            if let Some(v) = version {
                anyhow::ensure!(
                    !v.is_empty() && !v.contains(['/', '\\']) && v != "..",
                    "{setting} must be a folder name under MODEL_ROOT, got {v:?}"
                );
            }
        }
        anyhow::ensure!(
            (1..=10_000).contains(&self.disagreements_kept),
            "DISAGREEMENTS_KEPT must be between 1 and 10000, got {}",
            self.disagreements_kept
        );
        anyhow::ensure!(
            matches!(self.source.as_str(), "app" | "shadow"),
            "METRICS_SOURCE must be `app` or `shadow`, got {:?}",
            self.source
        );
        anyhow::ensure!(!self.request_timeout.is_zero(), "REQUEST_TIMEOUT_MS must be above 0");
        anyhow::ensure!(
            self.memory_limit_mib != Some(0),
            "MEMORY_LIMIT_MIB must be above 0 (unset: the cgroup's limit)"
        );
        self.connections.validate()
    }

    /// The budget model loads are held to: MEMORY_LIMIT_MIB, else the cgroup's limit.
    pub fn memory_budget(&self) -> MemoryBudget {
        self.memory_limit_mib.map_or_else(MemoryBudget::from_cgroup, MemoryBudget::mib)
    }

    pub fn model_dir(&self) -> PathBuf {
        self.model_root.join(&self.model_version)
    }

    pub fn reference_dir(&self) -> Option<PathBuf> {
        self.reference_version.as_ref().map(|v| self.model_root.join(v))
    }
}
