//! What every handler shares: the settings, the classifier, the model client (for
//! readiness) and the metrics. Built once by `start`.

use std::sync::Arc;

use crate::{
    cache::PredictionCache, classify::Classifier, config::Config, metrics::Metrics, model_client::ModelClient,
};

/// Cloned for every request (axum hands each handler its own copy): one `Arc`, so a clone
/// is one counter increment, not a model channel's worth of them (the clones and drops of
/// a field-by-field state showed in the app's profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<Config>,
    pub classifier: Arc<Classifier>,
    pub model: ModelClient,
    pub metrics: Arc<Metrics>,
    /// Permits for classifications in progress (MAX_CONCURRENT_REQUESTS).
    pub classifications: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, model: ModelClient) -> Self {
        let cache = config.cache.enabled.then(|| PredictionCache::new(config.cache.ttl, config.cache.max_entries));
        let metrics = Arc::new(Metrics::new(
            &config.app_version,
            config.cache.enabled,
            config.telemetry.otlp_endpoint.as_deref(),
        ));
        let classifier = Arc::new(Classifier { model: model.clone(), cache, metrics: metrics.clone() });
        let classifications = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
        Self(Arc::new(Shared { config: Arc::new(config), classifier, model, metrics, classifications }))
    }
}

#[cfg(test)]
impl AppState {
    /// The default settings over a model tier that cannot be found: for unit tests of the
    /// layers and routes, which answer without reaching the model.
    pub(crate) fn without_model() -> Self {
        use crate::model_channel::Resolver;
        let resolve: Resolver = Arc::new(|| Box::pin(async { Err(std::io::Error::other("no model in unit tests")) }));
        let timeout = std::time::Duration::from_millis(200);
        let model = ModelClient::with_resolver(
            "model.invalid:8081".into(),
            resolve,
            timeout,
            std::time::Duration::from_secs(3600),
        );
        Self::new(Config::default(), model)
    }
}
