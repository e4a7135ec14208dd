//! OTLP export: with OTEL_EXPORTER_OTLP_ENDPOINT set, both services (as real processes)
//! export their spans over OTLP/gRPC to a real receiver, as one trace that continues the
//! caller's `traceparent`, the model's span a child of the app's; and their metrics, by
//! the same names as on their Prometheus pages.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportedSpan>>>);

/// (service, metric name) of every exported metric.
#[derive(Clone, Default)]
struct MetricsReceiver(Arc<Mutex<Vec<(String, String)>>>);

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref())
        .map(|v| format!("{:?}", v.value))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rm in request.into_inner().resource_metrics {
            let service = service_name(rm.resource.as_ref());
            for metric in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                seen.push((service.clone(), metric.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The model-service binary, built by `cargo test --workspace` (scripts/test-rust.sh).
fn model_service_binary() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_app-service")).with_file_name("model-service");
    assert!(bin.is_file(), "{} is missing: run the workspace tests (`make test`)", bin.display());
    bin
}

#[tokio::test]
async fn both_services_export_one_trace_and_their_metrics_over_otlp() {
    let (receiver, metrics) = (Receiver::default(), MetricsReceiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(metrics.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let ort = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is not set: run through `make test`");
    let (model_addr, app_addr) = (free_addr(), free_addr());
    let _model = Process(
        Command::new(model_service_binary())
            .env("ORT_DYLIB_PATH", ort)
            .env("MODEL_ROOT", concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
            .env("GRPC_ADDR", model_addr.to_string())
            .env("METRICS_ADDR", free_addr().to_string())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _app = Process(
        Command::new(env!("CARGO_BIN_EXE_app-service"))
            .env("HTTP_ADDR", app_addr.to_string())
            .env("MODEL_HOST", format!("http://{model_addr}"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http.get(format!("http://{app_addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "the services did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Exactly one request carries this trace.
    let answer = http
        .post(format!("http://{app_addr}/sms/"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"sms": "WINNER!! Claim your free prize now"}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());

    // The batch exporters send within seconds; wait for one span from each service.
    let (app_span, model_span) = loop {
        let spans = receiver.0.lock().unwrap().clone();
        let of = |service: &str| {
            spans.iter().find(|s| s.trace_id == trace_id && s.service.contains(service)).cloned()
        };
        if let (Some(a), Some(m)) = (of("app-service"), of("model-service")) {
            break (a, m);
        }
        assert!(Instant::now() < deadline + Duration::from_secs(10), "spans not exported: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(app_span.name, "POST /sms/");
    assert_eq!(app_span.parent_span_id, "00f067aa0ba902b7", "the app continues the caller's span");
    assert_eq!(model_span.name, "sms.v1.SpamClassifier/Classify");
    assert_eq!(model_span.parent_span_id, app_span.span_id, "the model's span is the app's child");

    // Metrics go the same way, named as the instruments are (Prometheus adds `_total`).
    let want = [("app-service", "sms_requests"), ("app-service", "sms_model_calls"),
                ("model-service", "sms_model_requests"), ("model-service", "sms_model_inference_seconds")];
    loop {
        let seen = metrics.0.lock().unwrap().clone();
        let missing: Vec<_> =
            want.iter().filter(|(svc, name)| !seen.iter().any(|(s, n)| s.contains(svc) && n == name)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(10), "metrics not exported: {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
}
