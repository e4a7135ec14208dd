//! docs/contracts.md's settings tables against the app service's configuration.

#[path = "../../runtime/tests/support/settings_table.rs"]
mod settings_table;

use app_service::config::Config;
use sms_runtime::settings::Env;

#[test]
fn the_documented_settings_are_the_ones_read_with_their_defaults() {
    assert_eq!(
        format!("{:?}", Config::read(&Env::new(|_: &str| None)).unwrap()),
        format!("{:?}", Config::default()),
        "an empty environment gives Config::default()"
    );
    settings_table::check(
        "app",
        &["app service:", "both services, every listener (app HTTP; model gRPC and metrics):"],
        &|lookup| Config::read(&Env::new(lookup)).map(|c| format!("{c:?}")).map_err(|e| format!("{e:#}")),
    );
}
