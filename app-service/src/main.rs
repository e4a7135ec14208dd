use app_service::Config;

fn main() -> std::process::ExitCode {
    sms_runtime::server::run(
        "app-service",
        Config::from_env(),
        |c| &c.telemetry,
        |c| c.runtime_threads,
        app_service::start,
    )
}
