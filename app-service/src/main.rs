use std::process::ExitCode;

use sms_proto::telemetry::{self, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = telemetry::init("app-service");
    let started = async {
        let config = app_service::Config::from_env()?;
        let summary = format!(
            "version={} model_host={} cache_enabled={}",
            config.app_version, config.model_host, config.cache.enabled
        );
        anyhow::Ok((app_service::start(config).await?, summary))
    };
    let (running, summary) = match started.await {
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
