//! The model service: serves `sms.v1.SpamClassifier` over gRPC for one model version,
//! with health, reflection, Prometheus metrics on their own port and hot model reload.
//!
//! A request's path: `service::Classifier::classify` (validate, metrics) ->
//! `workers::InferencePool` (queue, worker thread) -> `model::Model` (ONNX Runtime).
//! The Open Inference Protocol (`oip`: gRPC beside `sms.v1`, `oip_rest`: HTTP/JSON on its
//! own port) takes the same path from `service::Serving::predict` on.

pub mod budget;
pub mod config;
pub mod counting;
pub mod disagreements;
pub mod drift;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod oip_rest;
pub mod reload;
pub mod service;
pub mod shadow;
pub mod workers;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use sms_proto::{
    MAX_GRPC_MESSAGE_BYTES, inference::grpc_inference_service_server::GrpcInferenceServiceServer,
    v1::spam_classifier_server::SpamClassifierServer,
};
use sms_runtime::{
    conn::{GrpcIncoming, serve_http, within},
    server::{Running, bind},
};

pub use config::Config;
use metrics::Metrics;
use oip::{Oip, OipGrpc};
use service::{Classifier, Serving};
use shadow::Comparison;
use workers::InferencePool;

/// Calls open at once on one HTTP/2 connection (a client opens more connections, or waits).
/// Each costs memory while it waits; 32 keep 2 workers busy with room to spare, and
/// MAX_CONNECTIONS x 32 calls stay inside the chart's memory limit, where 256 did not
/// (docs/performance.md).
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// Streams a client may reset before the server takes them up, before it is treated as a
/// rapid-reset attack (hyper's default 20 turned a model stall into a GOAWAY).
const PENDING_RESETS_PER_CONNECTION: usize = 256;

/// A started model service (`stop` drains in-flight calls and shuts down).
pub type RunningServer = Running<Listening>;

/// Where a started model service listens, and what it serves.
#[derive(Debug, Clone)]
pub struct Listening {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The Open Inference Protocol's HTTP/JSON endpoints.
    pub inference_http_addr: SocketAddr,
    pub model_version: String,
    pub inference_threads: usize,
    /// The jobs each inference thread has run so far.
    pub inference_load: workers::WorkerLoad,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gRPC {}, metrics {}, inference HTTP {}, model {}, {} inference threads",
            self.grpc_addr, self.metrics_addr, self.inference_http_addr, self.model_version, self.inference_threads
        )
    }
}

/// Loads the model (failing with a clear message if it or ONNX Runtime is missing),
/// binds both listeners and starts serving. Addresses with port 0 get a free port.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let env = model::ort_environment(config.ort_dylib.as_deref())?;
    let dir = config.model_dir();
    let (e, d, n) = (env.clone(), dir.clone(), config.workers);
    let budget = config.memory_budget();
    let models = tokio::task::spawn_blocking(move || reload::load_models(&e, &d, n, &budget)).await??;
    let card = models[0].card.clone();

    let metrics = Arc::new(Metrics::new(
        &config.model_version,
        &config.source,
        config.reference_version.as_deref(),
        config.telemetry.otlp_endpoint.as_deref(),
    ));
    metrics.set_model_info(&card);
    let pool = Arc::new(InferencePool::start(models, config.queue_per_worker));
    let comparison = match (config.reference_dir(), config.reference_version.clone()) {
        (Some(dir), Some(version)) => {
            let (e, n) = (env.clone(), config.workers);
            let models = tokio::task::spawn_blocking(move || reload::load_models(&e, &dir, n, &budget))
                .await?
                .map_err(|e| e.context("the reference model (REFERENCE_VERSION) cannot be loaded"))?;
            let reference = Arc::new(InferencePool::start(models, config.queue_per_worker));
            Some(Arc::new(Comparison::new(reference, version, config.disagreements_kept, config.disagreement_texts)))
        }
        _ => None,
    };

    let grpc_listener = bind(config.grpc_addr, "gRPC", "GRPC_ADDR").await?;
    let metrics_listener = bind(config.metrics_addr, "metrics", "METRICS_ADDR").await?;
    let http_listener = bind(config.inference_http_addr, "inference HTTP", "INFERENCE_HTTP_ADDR").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;
    let inference_http_addr = http_listener.local_addr()?;

    // Health goes SERVING only now: the model is loaded and warmed on every worker.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SpamClassifierServer<Classifier>>().await;
    health.set_serving::<GrpcInferenceServiceServer<OipGrpc>>().await;
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let serving = Arc::new(Serving {
        pool: pool.clone(),
        metrics: metrics.clone(),
        source: config.source.clone(),
        comparison: comparison.clone(),
        request_timeout: config.request_timeout,
        model_version: config.model_version.as_str().into(),
        // A call holds a place in the queue per row: one larger than the queue could never run.
        max_rows: config.max_batch_rows.min(pool.capacity()),
    });
    let oip = Arc::new(Oip::new(serving.clone()));
    let classifier =
        SpamClassifierServer::new(Classifier { serving }).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let inference = GrpcInferenceServiceServer::new(OipGrpc(oip.clone()))
        .max_decoding_message_size(oip::MAX_REQUEST_BYTES)
        .max_encoding_message_size(oip::MAX_REQUEST_BYTES);
    let classifier = disagreements::SharedAnswers::new(classifier, comparison.clone(), config.request_timeout);
    let classifier = counting::Counted::new(classifier, metrics.clone());

    let listening = Listening {
        grpc_addr,
        metrics_addr,
        inference_http_addr,
        model_version: config.model_version.clone(),
        inference_threads: pool.workers(),
        inference_load: pool.load(),
    };
    let limits = config.connections;
    Ok(Running::spawn(listening, move |shutdown| async move {
        let grpc_shutdown = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.requested().await;
                health.set_not_serving::<SpamClassifierServer<Classifier>>().await;
                health.set_not_serving::<GrpcInferenceServiceServer<OipGrpc>>().await;
            }
        };
        let grpc = tonic::transport::Server::builder()
            // Bounded per connection: streams, and streams a client resets before they are
            // taken up (the app cancels calls at its deadline; the default 20 turns a model
            // stall into a GOAWAY that fails every call on the connection).
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_max_pending_accept_reset_streams(Some(PENDING_RESETS_PER_CONNECTION))
            // Dead peers are noticed, and no connection lives forever (DNS-balanced
            // clients then spread over new replicas).
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_connection_age(Duration::from_secs(600))
            .max_connection_age_grace(Duration::from_secs(30))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(classifier)
            .add_service(inference)
            .serve_with_incoming_shutdown(
                GrpcIncoming::new(grpc_listener, limits, metrics.refusals("grpc")),
                grpc_shutdown,
            );
        // tonic waits for every connection to end, even one that never sent its preface.
        let grpc = within(grpc, shutdown.clone(), limits.shutdown_timeout, "gRPC");
        let metrics_app = Router::new().route("/metrics", get(render_metrics)).with_state(metrics.clone());
        let metrics_server =
            serve_http(metrics_listener, metrics_app, limits, shutdown.clone(), metrics.refusals("metrics"));
        let mut watchers = Vec::new();
        if let Some(every) = config.reload_interval {
            let watch = |dir, pool, metrics| {
                tokio::spawn(reload::watch_for_new_model(
                    dir,
                    every,
                    env.clone(),
                    pool,
                    metrics,
                    budget,
                    shutdown.clone(),
                ))
            };
            watchers.push(watch(dir, pool.clone(), Some(metrics.clone())));
            if let (Some(c), Some(reference_dir)) = (&comparison, config.reference_dir()) {
                watchers.push(watch(reference_dir, c.reference.clone(), None));
            }
        }

        let inference_http = serve_http(
            http_listener,
            oip_rest::router(oip),
            limits,
            shutdown.clone(),
            metrics.refusals("inference-http"),
        );
        let (grpc, (), ()) = tokio::join!(grpc, metrics_server, inference_http);
        for w in watchers {
            let _ = w.await;
        }
        // Every accepted call has been answered; now the workers can go.
        let reference = comparison.and_then(|c| Arc::try_unwrap(c).ok()).map(|c| c.reference);
        for pool in [Some(pool), reference].into_iter().flatten() {
            if let Ok(pool) = Arc::try_unwrap(pool) {
                tokio::task::spawn_blocking(move || pool.shutdown()).await?;
            }
        }
        if let Some(grpc) = grpc {
            grpc.map_err(|e| anyhow::anyhow!("gRPC server: {e}"))?;
        }
        Ok(())
    }))
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sms_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(sms_proto::inference::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
}
