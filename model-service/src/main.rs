use model_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sms_runtime::server::run("model-service", Config::from_env(), |c| &c.telemetry, model_service::start).await
}
