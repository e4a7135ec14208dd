//! One loaded model: its card (`model.json`) and an ONNX Runtime session. All text
//! preprocessing lives in the ONNX graph except whitespace normalization, which the
//! model card declares and `sms_proto::normalize_text` applies (see training/train.py).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use ort::{environment::Environment, session::Session, value::Tensor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::budget::MemoryBudget;

/// The model card written by training next to `model.onnx`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub classes: Vec<String>,
    pub threshold: f32,
    pub data: DataInfo,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// sha256 of the model.onnx this card describes: graph and card are one unit.
    pub onnx_sha256: String,
    /// The held-out split's distributions, the reference of the drift metrics (absent
    /// from cards written before training measured them).
    #[serde(default)]
    pub reference: Option<crate::drift::Reference>,
    /// Filled in by the loader, not read from the file.
    #[serde(skip)]
    pub loaded_at_unix: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DataInfo {
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model card {path}: {reason}")]
    Card { path: PathBuf, reason: String },
    #[error("model file {path}: {reason}")]
    Onnx { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

pub struct Model {
    session: Session,
    spam_index: usize,
    pub card: Arc<ModelCard>,
    /// Whether one run over a batch costs less per row than one run per row, measured on
    /// this graph when it loads (`measure_batches`).
    pub batch_is_cheaper: bool,
}

/// Rows of the batch the load times against as many single runs, and the most rows one
/// run takes: a run's intermediate tensors grow with its rows (the graphs' TF-IDF is a row
/// of the vocabulary per message) and ONNX Runtime's arena keeps the largest run's for
/// good, so a 64-row call runs as 4 runs of 16 (docs/performance.md).
pub const BATCH_ROWS: usize = 16;

impl Model {
    /// Loads one model from `dir` (see `load_sessions`), with no memory budget.
    pub fn load(env: &Environment, dir: &Path) -> Result<Self, ModelError> {
        let mut models = Self::load_sessions(env, dir, 1, &MemoryBudget::UNLIMITED)?;
        Ok(models.pop().expect("one session"))
    }

    /// Loads `dir/model.json` and `dir/model.onnx` into `sessions` sessions (one per
    /// worker) and warms each up, so the first real request does not pay for lazy
    /// initialisation. One version is one fact: the folder's name, the card and the
    /// graph's metadata must agree on the version, the name, the classes and the
    /// threshold, and the card must name the graph's sha256, or the pair is refused. A
    /// graph whose load would pass `budget` is refused before it is read.
    pub fn load_sessions(
        env: &Environment,
        dir: &Path,
        sessions: usize,
        budget: &MemoryBudget,
    ) -> Result<Vec<Self>, ModelError> {
        let card = read_card(dir)?;
        let card_err = |reason: String| ModelError::Card { path: dir.join("model.json"), reason };
        let folder = dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if card.version != folder {
            return Err(card_err(format!(
                "says version {:?}, but it is in the folder of version {folder:?} (MODEL_VERSION or REFERENCE_VERSION): \
                 a version is served from its own folder",
                card.version
            )));
        }
        let onnx = dir.join("model.onnx");
        let onnx_err = |reason: String| ModelError::Onnx { path: onnx.clone(), reason };
        let size = match std::fs::metadata(&onnx) {
            Ok(m) if m.is_file() => m.len(),
            _ => {
                return Err(onnx_err("not found (run `make models`, or point MODEL_ROOT at the models folder)".into()));
            }
        };
        budget.admit(size, sessions).map_err(onnx_err)?;
        let graph = std::fs::read(&onnx).map_err(|e| onnx_err(format!("cannot be read: {e}")))?;
        // A graph that is not the one its card describes (files replaced one at a time, a
        // copy in progress, a wrong artifact) is refused rather than served under the card's name.
        let sha256: String = Sha256::digest(&graph).iter().map(|b| format!("{b:02x}")).collect();
        if !sha256.eq_ignore_ascii_case(&card.onnx_sha256) {
            return Err(onnx_err(format!(
                "has sha256 {sha256}, but model.json describes {} (replace both files together)",
                card.onnx_sha256
            )));
        }
        let spam_index = card.classes.iter().position(|c| c == "spam").ok_or_else(|| ModelError::Card {
            path: dir.join("model.json"),
            reason: "`classes` has no \"spam\"".into(),
        })?;
        let card = Arc::new(card);
        let new_session = || {
            Session::builder(env)
                .and_then(|b| Ok(b.with_intra_threads(1)?))
                .and_then(|mut b| b.commit_from_memory(&graph))
                .map_err(|e| onnx_err(format!("cannot be loaded by ONNX Runtime: {e}")))
        };
        // Whether a batch is cheaper is timed on a session of its own, dropped before the
        // serving sessions load: the timing's batch would stay in a serving session's arena.
        let batch_is_cheaper = {
            let mut probe = Self { session: new_session()?, spam_index, card: card.clone(), batch_is_cheaper: true };
            probe.measure_batches().map_err(|e| onnx_err(format!("warm-up failed: {e}")))?
        };
        let mut models = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let session = new_session()?;
            if models.is_empty() {
                check_metadata(&session, &card).map_err(onnx_err)?;
            }
            let mut model = Self { session, spam_index, card: card.clone(), batch_is_cheaper };
            for probe in ["WINNER!! Claim your free prize now, call 09061701461", "see you at lunch?"] {
                let p = model.spam_probability(probe).map_err(|e| onnx_err(format!("warm-up failed: {e}")))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(onnx_err(format!("warm-up returned probability {p}, not in [0, 1]")));
                }
            }
            models.push(model);
        }
        Ok(models)
    }

    /// Spam probability of one normalized text.
    pub fn spam_probability(&mut self, text: &str) -> Result<f32, ModelError> {
        Ok(self.spam_probabilities(&[text.to_owned()])?[0])
    }

    /// Spam probabilities of N normalized texts: in runs of up to `BATCH_ROWS` rows when
    /// that is cheaper per row for this graph, else one run each.
    pub fn spam_probabilities(&mut self, texts: &[String]) -> Result<Vec<f32>, ModelError> {
        let rows = if self.batch_is_cheaper { BATCH_ROWS } else { 1 };
        if texts.len() <= rows {
            return self.run(texts);
        }
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(rows) {
            out.extend(self.run(chunk)?);
        }
        Ok(out)
    }

    /// One ONNX Runtime run over `texts` as a [N, 1] string tensor.
    fn run(&mut self, texts: &[String]) -> Result<Vec<f32>, ModelError> {
        let err = |e: ort::Error| ModelError::Inference(e.to_string());
        let n = texts.len();
        let input = Tensor::from_string_array(([n, 1], texts)).map_err(err)?;
        let outputs = self.session.run(ort::inputs!["text" => input]).map_err(err)?;
        let probabilities = outputs
            .get("probabilities")
            .ok_or_else(|| ModelError::Inference("model has no `probabilities` output".into()))?;
        let (shape, probs) = probabilities.try_extract_tensor::<f32>().map_err(err)?;
        let classes = self.card.classes.len();
        if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != classes || self.spam_index >= classes {
            return Err(ModelError::Inference(format!(
                "`probabilities` has shape {:?} for {n} rows, not [{n}, {classes}]",
                &shape[..]
            )));
        }
        Ok(probs.chunks_exact(classes).map(|row| row[self.spam_index]).collect())
    }

    /// Times `BATCH_ROWS` rows in one run against as many single runs (the best of three
    /// of each): is a batch cheaper per row on this graph?
    fn measure_batches(&mut self) -> Result<bool, ModelError> {
        let rows: Vec<String> = (0..BATCH_ROWS)
            .map(|i| format!("probe message {i}: call now to claim your prize, or see you at lunch"))
            .collect();
        let (mut batch, mut singles) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..3 {
            let started = std::time::Instant::now();
            self.run(&rows)?;
            batch = batch.min(started.elapsed());
            let started = std::time::Instant::now();
            for r in &rows {
                self.run(std::slice::from_ref(r))?;
            }
            singles = singles.min(started.elapsed());
        }
        // A debug line: a start-up that fails says why in its one line, and nothing else.
        tracing::debug!(
            model_version = %self.card.version, batch_us = batch.as_micros() as u64, singles_us = singles.as_micros() as u64,
            "{BATCH_ROWS} rows: {} us in one ONNX Runtime run, {} us in {BATCH_ROWS} runs: {}",
            batch.as_micros(), singles.as_micros(),
            if batch < singles { "a call's rows run as one batch" } else { "a call's rows run one by one on the pool" }
        );
        Ok(batch < singles)
    }
}

/// The graph's own metadata (written by training/train.py) against the card: what names
/// an answer (name, version) and what decides it (classes, threshold).
fn check_metadata(session: &Session, card: &ModelCard) -> Result<(), String> {
    let metadata = session.metadata().map_err(|e| format!("its metadata cannot be read: {e}"))?;
    let threshold = card.threshold.to_string();
    let classes = card.classes.join(",");
    for (key, in_card) in [
        ("version", card.version.as_str()),
        ("name", card.name.as_str()),
        ("classes", &classes),
        ("threshold", &threshold),
    ] {
        let Some(in_graph) = metadata.custom(key) else {
            return Err(format!(
                "has no `{key}` metadata, so model.json's {key} {in_card:?} cannot be checked (export it with training/train.py)"
            ));
        };
        let agree = match key {
            "threshold" => in_graph.parse::<f32>().is_ok_and(|t| t == card.threshold),
            _ => in_graph == in_card,
        };
        if !agree {
            return Err(format!(
                "says {key} {in_graph:?} in its metadata, but model.json says {in_card:?}: a card that changes \
                 the {key} needs the graph made with it"
            ));
        }
    }
    Ok(())
}

fn read_card(dir: &Path) -> Result<ModelCard, ModelError> {
    let path = dir.join("model.json");
    let card_err = |reason: String| ModelError::Card { path: path.clone(), reason };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        card_err(format!(
            "cannot be read ({e}); MODEL_ROOT/MODEL_VERSION must name a folder with model.json and model.onnx"
        ))
    })?;
    let mut card: ModelCard =
        serde_json::from_str(&text).map_err(|e| card_err(format!("is not a valid model card: {e}")))?;
    if !(0.0..=1.0).contains(&card.threshold) {
        return Err(card_err(format!("threshold {} is not in [0, 1]", card.threshold)));
    }
    card.loaded_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(card)
}

/// The process-wide ONNX Runtime environment. ort allows one per process, and tests run
/// several servers in one process, so it is created once and shared.
pub fn ort_environment(dylib: Option<&Path>) -> anyhow::Result<Environment> {
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);
    let mut slot = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let path = dylib.map_or_else(|| PathBuf::from("libonnxruntime.so"), Path::to_path_buf);
    if dylib.is_some() && !path.is_file() {
        anyhow::bail!(
            "ONNX Runtime library not found at ORT_DYLIB_PATH={} (run `make ort` to fetch libonnxruntime 1.31)",
            path.display()
        );
    }
    let builder = ort::init_from(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot load the ONNX Runtime library {} ({e}); set ORT_DYLIB_PATH to libonnxruntime.so 1.31 (`make ort` fetches it)",
            path.display()
        )
    })?;
    let env = builder.with_name("model-service").build().map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?;
    *slot = Some(env.clone());
    Ok(env)
}
