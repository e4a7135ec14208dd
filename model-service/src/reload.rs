//! Hot reload: new files in the served version's folder are picked up without a restart.
//! The new model is loaded and warmed for every worker first, then swapped in; if it
//! fails to load, the old one keeps serving. Polling (not inotify) because the folder
//! is a hostPath/shared mount where file events are unreliable.

use std::{path::PathBuf, sync::Arc, time::Duration, time::SystemTime};

use ort::environment::Environment;
use sms_runtime::server::Shutdown;

use crate::{budget::MemoryBudget, metrics::Metrics, model::Model, workers::InferencePool};

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(dir: &std::path::Path) -> Fingerprint {
    ["model.onnx", "model.json"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// Loads one warmed model per worker within `budget` (blocking: run it off the async threads).
pub fn load_models(
    env: &Environment,
    dir: &std::path::Path,
    workers: usize,
    budget: &MemoryBudget,
) -> anyhow::Result<Vec<Model>> {
    Ok(Model::load_sessions(env, dir, workers, budget)?)
}

/// Watches `dir` and swaps new files into `pool`. `metrics`: the served model's (counts
/// reloads and names the model in `sms_model_info`); `None` for the reference model.
pub async fn watch_for_new_model(
    dir: PathBuf,
    interval: Duration,
    env: Environment,
    pool: Arc<InferencePool>,
    metrics: Option<Arc<Metrics>>,
    budget: MemoryBudget,
    shutdown: Shutdown,
) {
    let role = if metrics.is_some() { "served" } else { "reference" };
    let mut seen = fingerprint(&dir);
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut stop => return,
        }
        let now = fingerprint(&dir);
        if now == seen {
            continue;
        }
        // Let a copy in progress finish: act only once the files stop changing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if fingerprint(&dir) != now {
            continue;
        }
        seen = now;
        let (d, e, n) = (dir.clone(), env.clone(), pool.workers());
        match tokio::task::spawn_blocking(move || load_models(&e, &d, n, &budget)).await {
            Ok(Ok(models)) => {
                let card = models[0].card.clone();
                pool.swap(models);
                if let Some(m) = &metrics {
                    m.set_model_info(&card);
                    m.reloaded(true);
                }
                tracing::info!(model = %card.name, version = %card.version, role, "loaded new model files");
            }
            Ok(Err(err)) => {
                if let Some(m) = &metrics {
                    m.reloaded(false);
                }
                tracing::error!(role, "new model files failed to load, still using the previous model: {err:#}");
            }
            Err(join) => tracing::error!("model reload task failed: {join}"),
        }
    }
}
