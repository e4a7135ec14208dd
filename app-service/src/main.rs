use app_service::Config;

fn main() -> std::process::ExitCode {
    let config = Config::from_env();
    let threads = config.as_ref().map_or(1, |c| c.runtime_threads);
    sms_runtime::server::block_on(
        threads,
        sms_runtime::server::run("app-service", config, |c| &c.telemetry, app_service::start),
    )
}
