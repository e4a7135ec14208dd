use app_service::Config;

fn main() -> std::process::ExitCode {
    // `app-service pre-stop-delay SECONDS`: the preStop hook of a pod whose Deployment
    // Flagger copies. Flagger v1.36.1 is built on Kubernetes' v0.27 API types, which
    // predate `lifecycle.preStop.sleep` and drop it, leaving an invalid hook; the image
    // is distroless (no `sleep`), so the binary waits itself.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pre-stop-delay") {
        return match args.get(2).and_then(|s| s.parse::<u64>().ok()).filter(|s| *s <= 300) {
            Some(seconds) => {
                std::thread::sleep(std::time::Duration::from_secs(seconds));
                std::process::ExitCode::SUCCESS
            }
            None => {
                eprintln!("usage: app-service pre-stop-delay SECONDS (0..=300)");
                std::process::ExitCode::from(2)
            }
        };
    }
    sms_runtime::server::run(
        "app-service",
        Config::read(&sms_runtime::settings::Env::process()),
        |c| &c.telemetry,
        |c| c.runtime_threads,
        app_service::start,
    )
}
