//! The app's settings: environment variables with defaults that run on one machine, each
//! default stated once (in `Default`); names in docs/contracts.md. `start` validates, so
//! configurations built in code (the tests) are checked by the same rules.

use std::{net::SocketAddr, time::Duration};

use sms_runtime::{conn::ConnLimits, server::cores, settings, telemetry::TelemetryConfig};

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// Model endpoint, e.g. `http://sms-app-model:8081`; `http://` is assumed when missing.
    pub model_host: String,
    /// This app's version label: `v1` stable, `v2` canary.
    pub app_version: String,
    /// Deadline of every model call (connecting included).
    pub model_timeout: Duration,
    pub cache: CacheConfig,
    /// How often to re-resolve MODEL_HOST for client-side balancing.
    pub resolve_interval: Duration,
    /// Classifications in progress at once; more are refused at once with 503 and
    /// Retry-After instead of queueing (memory stays bounded under any load).
    pub max_concurrent_requests: usize,
    /// Idle timeout and shutdown bound of the HTTP listener.
    pub connections: ConnLimits,
    /// Threads that serve HTTP and call the model (the tokio runtime's workers).
    pub runtime_threads: usize,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl: Duration,
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: ([0, 0, 0, 0], 8080).into(),
            model_host: "http://127.0.0.1:8081".into(),
            app_version: "v1".into(),
            model_timeout: Duration::from_millis(1000),
            cache: CacheConfig { enabled: false, ttl: Duration::from_secs(300), max_entries: 10_000 },
            resolve_interval: Duration::from_secs(10),
            // A model connection carries 32 calls at once; twice that keeps it full while
            // the rest wait briefly. A larger bound let an overload make most of the excess
            // wait the whole MODEL_TIMEOUT_MS for its 503 (docs/performance.md); now it is
            // refused at once.
            max_concurrent_requests: 64,
            connections: ConnLimits::default(),
            runtime_threads: cores(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// The settings `env` gives (the process's: `Env::process()`), each unset one at its
    /// default.
    pub fn read(env: &settings::Env<impl Fn(&str) -> Option<String>>) -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            http_addr: env.parse("HTTP_ADDR", d.http_addr)?,
            model_host: env.text("MODEL_HOST").unwrap_or(d.model_host),
            app_version: env.text("APP_VERSION").unwrap_or(d.app_version),
            model_timeout: env.millis("MODEL_TIMEOUT_MS", d.model_timeout)?,
            cache: CacheConfig {
                enabled: env.flag("CACHE_ENABLED", d.cache.enabled)?,
                ttl: env.secs("CACHE_TTL_SECS", d.cache.ttl)?,
                max_entries: env.parse("CACHE_MAX_ENTRIES", d.cache.max_entries)?,
            },
            resolve_interval: d.resolve_interval,
            max_concurrent_requests: env.parse("MAX_CONCURRENT_REQUESTS", d.max_concurrent_requests)?,
            connections: ConnLimits::read(env, d.connections)?,
            runtime_threads: env.parse("RUNTIME_THREADS", d.runtime_threads)?,
            telemetry: TelemetryConfig::read(env)?,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.app_version.trim().is_empty(), "APP_VERSION must not be empty");
        anyhow::ensure!(!self.model_timeout.is_zero(), "MODEL_TIMEOUT_MS must be above 0");
        anyhow::ensure!(self.max_concurrent_requests > 0, "MAX_CONCURRENT_REQUESTS must be above 0");
        anyhow::ensure!(self.runtime_threads >= 1, "RUNTIME_THREADS must be at least 1");
        anyhow::ensure!(
            !self.cache.enabled || (self.cache.max_entries > 0 && !self.cache.ttl.is_zero()),
            "CACHE_MAX_ENTRIES and CACHE_TTL_SECS must be above 0 when CACHE_ENABLED"
        );
        self.connections.validate()
    }
}
