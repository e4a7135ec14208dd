//! The shadow's comparison with the serving model: every call this server answers is also
//! scored by the reference model (the serving version, REFERENCE_VERSION, loaded from the
//! same model store and hot-reloaded like the served one), so agreement is measured on
//! the same messages, not inferred from two populations. Disagreements are kept in a
//! bounded sample an operator can fetch (ListDisagreements); texts only when allowed.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use sms_proto::v1::Disagreement;

use crate::{
    metrics::Metrics,
    workers::{InferencePool, PoolError, Prediction},
};

pub struct Comparison {
    pub reference: Arc<InferencePool>,
    pub reference_version: String,
    keep_texts: bool,
    sample: Mutex<VecDeque<Disagreement>>,
    capacity: usize,
    seen: AtomicU64,
}

/// What the comparison needs to know about one answered call.
pub struct Answered {
    /// The normalized text, handed on to the reference model.
    pub text: String,
    pub label: &'static str,
    pub spam_probability: f32,
    pub guess: Option<&'static str>,
    pub trace_id: String,
}

impl Comparison {
    pub fn new(reference: Arc<InferencePool>, reference_version: String, capacity: usize, keep_texts: bool) -> Self {
        Self {
            reference,
            reference_version,
            keep_texts,
            sample: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            seen: AtomicU64::new(0),
        }
    }

    /// Scores the text with the reference model and records agreement and the gap. A
    /// reference that fails is logged and not counted: it says nothing about this model.
    pub async fn compare(&self, answered: Answered, metrics: &Metrics) {
        let Answered { text, label, spam_probability, guess, trace_id } = answered;
        // The text is copied only for a server allowed to keep texts.
        let kept_text = self.keep_texts.then(|| text.clone());
        let reference = match self.reference.classify(text).await {
            Ok(p) => p,
            // Under overload the comparison is skipped, not the answer: it is a sample.
            Err(PoolError::Overloaded) => return,
            Err(e) => {
                tracing::warn!(reference_version = %self.reference_version, "reference model failed: {e}");
                return;
            }
        };
        let Prediction { spam_probability: reference_p, card, .. } = reference;
        let reference_label = if reference_p >= card.threshold { "spam" } else { "ham" };
        let agrees = reference_label == label;
        metrics.compared(agrees, f64::from((spam_probability - reference_p).abs()));
        if agrees {
            return;
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            trace_id = %trace_id, label, spam_probability,
            reference_version = %self.reference_version, reference_label, reference_spam_probability = reference_p,
            "shadow disagrees with the reference model"
        );
        let at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let kept = Disagreement {
            trace_id,
            at_unix_ms,
            label: label.into(),
            spam_probability,
            reference_version: self.reference_version.clone(),
            reference_label: reference_label.into(),
            reference_spam_probability: reference_p,
            guess: guess.unwrap_or_default().into(),
            text: kept_text.unwrap_or_default(),
        };
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        if sample.len() == self.capacity {
            sample.pop_back();
        }
        sample.push_front(kept);
    }

    /// The newest `limit` disagreements (all kept when 0), the capacity and how many were seen.
    pub fn recent(&self, limit: usize) -> (Vec<Disagreement>, usize, u64) {
        let sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        let n = if limit == 0 { sample.len() } else { limit.min(sample.len()) };
        (sample.iter().take(n).cloned().collect(), self.capacity, self.seen.load(Ordering::Relaxed))
    }
}
