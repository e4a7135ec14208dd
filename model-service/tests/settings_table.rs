//! docs/contracts.md's settings tables against the model service's configuration.

#[macro_use]
#[path = "../../runtime/tests/support/settings_table.rs"]
mod settings_table;

settings_table_test!(
    model_service::config::Config,
    "model",
    ["model service:", "both services, every listener (app HTTP; model gRPC and metrics):"]
);
