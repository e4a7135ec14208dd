//! Logs, traces and metrics for one service process.
//!
//! Logs go to stdout (in batches, [`crate::logwriter`]): `LOG_FORMAT=json` for machines (one JSON object a line), `text` for
//! people; `RUST_LOG` filters (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (e.g. `http://otel-collector:4317`), spans and metrics are also exported over
//! OTLP/gRPC, and the trace context passed downstream is the exported span's, so the
//! backend shows one trace across both services.
//!
//! Metrics are recorded through the OpenTelemetry metrics API. Each server owns a
//! [`MetricsPipeline`]: a meter provider whose readers are a Prometheus exporter (the
//! server's own `/metrics` page) and, with the switch above, an OTLP exporter. Series
//! recorded on every call are bound to their attributes once (OpenTelemetry's bound
//! instruments): the per-call attribute lookup is most of the API's cost.

use std::time::Duration;

use opentelemetry::{
    metrics::{BoundUpDownCounter, Meter, MeterProvider},
    trace::TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::SdkTracerProvider,
};
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::{EnvFilter, Layer, filter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings;

/// How long exporters may take to send what is left when the process stops.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The telemetry settings both services share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT=json`: one JSON object a line instead of text.
    pub json_logs: bool,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: export spans and metrics over OTLP/gRPC there.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    pub fn read(env: &settings::Env<impl Fn(&str) -> Option<String>>) -> anyhow::Result<Self> {
        let json_logs = match env.text("LOG_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => anyhow::bail!("LOG_FORMAT={other:?} is not valid: use text or json"),
        };
        Ok(Self { json_logs, otlp_endpoint: env.text("OTEL_EXPORTER_OTLP_ENDPOINT") })
    }
}

/// Keeps the trace exporter and the log writer alive; dropping it flushes the spans not
/// yet sent, then the log lines not yet written.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    _logs: crate::logwriter::Flusher,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take() {
            let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
    }
}

/// Sets up logging (and span export when configured) for the process. Call it once,
/// inside the Tokio runtime.
pub fn init(service: &'static str, config: &TelemetryConfig) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (stdout, flusher) = crate::logwriter::batched_stdout();
    // The log lines are events only: a per-call `info` span seen by the log layer costs its
    // fields formatted on every call (~6 % of the model's CPU at the chart's `info`) for
    // context no line needs (the lines that matter carry their trace_id). Spans still reach
    // the OTLP exporter when it is on.
    let events_only = || filter::filter_fn(|metadata| metadata.is_event());
    let logs = if config.json_logs {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_writer(stdout)
            .with_filter(events_only())
            .boxed()
    } else {
        fmt::layer().with_target(false).with_ansi(ansi).with_writer(stdout).with_filter(events_only()).boxed()
    };
    let mut export_error = None;
    let tracer = config.otlp_endpoint.as_deref().and_then(|endpoint| match tracer_provider(service, endpoint) {
        Ok(p) => Some(p),
        Err(e) => {
            export_error = Some(format!("span export to {endpoint} is off: {e}"));
            None
        }
    });
    let spans = tracer.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    // With no exporter nothing reads a span: filtered out for every layer, a span is never
    // created (the log layer's own filter alone still let the registry create, enter and
    // close each call's span: ~2,500 instructions a call at `info`).
    let no_spans = spans.is_none().then(events_only);
    let _ = tracing_subscriber::registry().with(filter).with(no_spans).with(logs).with(spans).try_init();
    if let Some(e) = export_error {
        tracing::warn!("{e}");
    }
    Telemetry { tracer, _logs: flusher }
}

fn resource(service: &'static str) -> Resource {
    Resource::builder().with_service_name(service).build()
}

fn tracer_provider(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(service)).build())
}

/// One server's metrics: record through [`MetricsPipeline::meter`], read with
/// [`MetricsPipeline::render`] (Prometheus text). Each server has its own, so several
/// servers in one process (the tests) keep their figures apart.
pub struct MetricsPipeline {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    service: &'static str,
}

impl MetricsPipeline {
    pub fn new(service: &'static str, otlp_endpoint: Option<&str>) -> Self {
        let registry = prometheus::Registry::new();
        // Names, labels and buckets exactly as the instruments define them: no unit
        // suffixes, no scope labels, no target_info series (docs/contracts.md).
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let mut builder = SdkMeterProvider::builder().with_reader(prometheus).with_resource(resource(service));
        if let Some(endpoint) = otlp_endpoint {
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
            {
                // Pushed every OTEL_METRIC_EXPORT_INTERVAL ms (the SDK reads the standard
                // variable; 60 s when unset). Prometheus pulls on its own schedule.
                Ok(exporter) => builder = builder.with_reader(PeriodicReader::builder(exporter).build()),
                Err(e) => tracing::warn!("metric export to {endpoint} is off: {e}"),
            }
        }
        Self { provider: builder.build(), registry, service }
    }

    pub fn meter(&self) -> Meter {
        self.provider.meter(self.service)
    }

    /// The Prometheus text exposition of every instrument of this pipeline.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8 metrics")
    }
}

impl Drop for MetricsPipeline {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT);
    }
}

/// Counts work as in progress until the guard drops, also when a deadline or a
/// disconnect drops the work half-way (a plain decrement after an await would not run).
pub struct InFlight<'a>(&'a BoundUpDownCounter<i64>);

impl<'a> InFlight<'a> {
    pub fn new(gauge: &'a BoundUpDownCounter<i64>) -> Self {
        gauge.add(1);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// The value of one sample in Prometheus text output whose labels include `labels`, e.g.
/// `sample_value(&text, "sms_model_predictions_total", &[("result", "spam")])`. For tests
/// and tools that read a /metrics page.
pub fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}
