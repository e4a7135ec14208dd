use model_service::Config;

fn main() -> std::process::ExitCode {
    sms_runtime::server::run(
        "model-service",
        Config::read(&sms_runtime::settings::Env::process()),
        |c| &c.telemetry,
        |c| c.runtime_threads,
        model_service::start,
    )
}
