//! Configuration from environment variables; names and defaults in docs/contracts.md.

use std::{env, net::SocketAddr, time::Duration};

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
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let config = Self {
            http_addr: parse("HTTP_ADDR", d.http_addr)?,
            model_host: var("MODEL_HOST").unwrap_or(d.model_host),
            app_version: var("APP_VERSION").unwrap_or(d.app_version),
            model_timeout: Duration::from_millis(parse("MODEL_TIMEOUT_MS", 1000)?),
            cache: CacheConfig {
                enabled: parse_bool("CACHE_ENABLED", d.cache.enabled)?,
                ttl: Duration::from_secs(parse("CACHE_TTL_SECS", 300)?),
                max_entries: parse("CACHE_MAX_ENTRIES", d.cache.max_entries)?,
            },
            resolve_interval: d.resolve_interval,
        };
        anyhow::ensure!(!config.app_version.trim().is_empty(), "APP_VERSION must not be empty");
        anyhow::ensure!(config.model_timeout > Duration::ZERO, "MODEL_TIMEOUT_MS must be above 0");
        anyhow::ensure!(
            !config.cache.enabled || config.cache.max_entries > 0,
            "CACHE_MAX_ENTRIES must be above 0 when CACHE_ENABLED"
        );
        Ok(config)
    }
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}

fn parse_bool(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => anyhow::bail!("{name}={v:?} is not a boolean (true/false)"),
    }
}
