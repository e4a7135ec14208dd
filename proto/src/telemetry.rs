//! Logging, optional OpenTelemetry trace export, and shutdown signals, shared by both
//! services.
//!
//! Logs go to stdout: `LOG_FORMAT=json` for machines (one JSON object a line), anything
//! else for people; `RUST_LOG` filters (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (e.g. `http://otel-collector:4317`), spans are also exported over OTLP/gRPC, and
//! the trace context passed to the model is the exported span's, so the backend shows one
//! trace across both services.

use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::trace::TraceContext;

/// Keeps the exporter alive; dropping it flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

/// Sets up logging (and trace export when configured) for the service `name`. Call it
/// once, inside the Tokio runtime.
pub fn init(name: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colour only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = if json {
        fmt::layer().json().flatten_event(true).with_target(false).boxed()
    } else {
        fmt::layer().with_target(false).with_ansi(ansi).boxed()
    };

    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    let mut export_error = None;
    let provider = endpoint.and_then(|endpoint| match otlp_provider(name, &endpoint) {
        Ok(p) => Some(p),
        Err(e) => {
            export_error = Some(format!("trace export to {endpoint} is off: {e}"));
            None
        }
    });
    let traces = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(name)));
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(traces).try_init();
    if let Some(e) = export_error {
        tracing::warn!("{e}");
    }
    Telemetry { provider }
}

fn otlp_provider(name: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resource = Resource::builder().with_service_name(name).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Makes `span` continue the caller's trace (a W3C `traceparent`, if valid) and returns
/// the context to log and to pass downstream: the exported span's own when trace export
/// is on, otherwise the caller's trace with a new span id (or a new trace).
pub fn continue_trace(span: &tracing::Span, incoming: Option<&str>) -> TraceContext {
    let parent = incoming.and_then(TraceContext::parse);
    if let Some(p) = parent {
        let flags = if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from_bytes(p.trace_id.to_be_bytes()),
            SpanId::from_bytes(p.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let own = span.context().span().span_context().clone();
    if own.is_valid() && parent.is_none_or(|p| u128::from_be_bytes(own.trace_id().to_bytes()) == p.trace_id) {
        return TraceContext {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            sampled: own.is_sampled(),
        };
    }
    TraceContext::child_of(parent)
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
