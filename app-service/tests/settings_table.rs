//! docs/contracts.md's settings tables against the app service's configuration.

#[macro_use]
#[path = "../../runtime/tests/support/settings_table.rs"]
mod settings_table;

settings_table_test!(
    app_service::config::Config,
    "app",
    ["app service:", "both services, every listener (app HTTP; model gRPC and metrics):"]
);
