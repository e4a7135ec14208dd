use app_service::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sms_runtime::server::run("app-service", Config::from_env(), |c| &c.telemetry, app_service::start).await
}
