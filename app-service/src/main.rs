use std::process::ExitCode;

use sms_runtime::{server::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // Settings first: a mistake there is one line on stderr, before anything starts.
    let config = match app_service::Config::from_env() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("app-service: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = telemetry::init("app-service", &config.telemetry);
    let summary =
        format!("version={} model_host={} cache_enabled={}", config.app_version, config.model_host, config.cache.enabled);
    let running = match app_service::start(config).await {
        Ok(r) => r,
        Err(err) => {
            eprintln!("app-service: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %running.addr, "app service ready: {summary}");
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    match running.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("app-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}
