use std::process::ExitCode;

use sms_proto::telemetry::{self, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = telemetry::init("model-service");
    let started = async {
        let config = model_service::Config::from_env()?;
        let version = config.model_version.clone();
        let running = model_service::start(config).await?;
        anyhow::Ok((running, version))
    };
    let (running, version) = match started.await {
        Ok(r) => r,
        Err(err) => {
            // One line that says what is missing and how to get it.
            eprintln!("model-service: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(grpc = %running.grpc_addr, metrics = %running.metrics_addr, %version, "model service ready");
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight calls");
    match running.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("model-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}
