use std::process::ExitCode;

use sms_runtime::{server::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // Settings first: a mistake there is one line on stderr, before anything starts.
    let config = match model_service::Config::from_env() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("model-service: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = telemetry::init("model-service", &config.telemetry);
    let version = config.model_version.clone();
    let running = match model_service::start(config).await {
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
