//! What both services run on, and nothing of what they do:
//!
//! - [`settings`]: typed environment settings (one trimming rule, one error wording);
//! - [`telemetry`]: logs, OpenTelemetry trace export, and the OpenTelemetry metrics
//!   pipeline each server exports for Prometheus (and over OTLP, behind the same switch
//!   as traces);
//! - [`logwriter`]: log lines written to stdout in bounded batches, off the request path;
//! - [`trace`]: the W3C trace context, read and written by OpenTelemetry's propagator;
//! - [`server`]: binding listeners, the handle of a started server, shutdown signals;
//! - [`conn`]: connection bounds (idle timeout, HTTP/2 preface deadline, bounded drain).

pub mod conn;
pub mod logwriter;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod trace;
