//! The shadow's comparison with the serving model: every call this server answers is also
//! scored by the reference model (the serving version, REFERENCE_VERSION, loaded from the
//! same model store and hot-reloaded like the served one), so agreement is measured on
//! the same messages, not inferred from two populations. Disagreements are kept in a
//! bounded sample an operator can fetch (ListDisagreements); texts only when allowed.
//!
//! The sample is encoded once per change and shared by every answer (`Snapshot`): a
//! caller that asks and never reads pins a reference to that one buffer, not a copy, and
//! the bytes pinned by unread answers have a process-wide budget (`disagreements.rs`).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use prost::Message;
use sms_proto::v1::{Disagreement, Disagreements};

use crate::{
    metrics::Metrics,
    model::ModelCard,
    workers::{InferencePool, PoolError, Predictions},
};

pub struct Comparison {
    pub reference: Arc<InferencePool>,
    pub reference_version: String,
    keep_texts: bool,
    sample: Mutex<Sample>,
    capacity: usize,
    seen: AtomicU64,
    /// The newest encoding of the sample, shared by the answers that use it.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// Bytes of every snapshot still referenced (by the cache or by answers not yet read).
    pinned: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Sample {
    newest_first: VecDeque<Disagreement>,
    /// Counts changes, so a snapshot knows whether it is current.
    generation: u64,
}

/// Longest answer, in encoded bytes: ~60 disagreements with 1,000-character texts, ~1,500
/// without. Past it an answer holds the newest that fit and says `truncated`.
pub const ANSWER_BYTES: usize = 256 * 1024;
/// Budget for the bytes of snapshots that unread answers still pin: past it, a new answer
/// reuses the newest snapshot (a few changes stale) instead of encoding another.
pub const PINNED_BYTES: usize = 4 * 1024 * 1024;

/// The sample encoded once, as the `disagreements` field of `Disagreements` (each entry
/// a length-delimited field 1), newest first, within `ANSWER_BYTES`.
pub struct Snapshot {
    generation: u64,
    /// The encoded entries; slices of it go out in answers without a copy.
    pub entries: Bytes,
    /// End offset of each entry in `entries`.
    ends: Vec<usize>,
    /// How many the sample held when encoded (more than `ends.len()` when over budget).
    kept: usize,
    pub capacity: u32,
    pub seen: u64,
}

impl Snapshot {
    /// The newest `limit` entries (every one when 0) as the bytes of a `Disagreements`
    /// message: a shared slice of the entries, then the small fields.
    pub fn answer(&self, limit: usize) -> (Bytes, Bytes) {
        let wanted = if limit == 0 { self.kept } else { limit.min(self.kept) };
        let n = wanted.min(self.ends.len());
        let prefix = self.entries.slice(..n.checked_sub(1).map_or(0, |last| self.ends[last]));
        let tail = Disagreements {
            disagreements: Vec::new(),
            capacity: self.capacity,
            seen: self.seen,
            truncated: n < wanted,
        }
        .encode_to_vec();
        (prefix, Bytes::from(tail))
    }
}

/// Frees a snapshot's bytes from the pinned count when the last answer using them is gone.
struct Pinned {
    bytes: Vec<u8>,
    pinned: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.pinned.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
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
            sample: Mutex::new(Sample { newest_first: VecDeque::with_capacity(capacity), generation: 0 }),
            capacity,
            seen: AtomicU64::new(0),
            snapshot: Mutex::new(None),
            pinned: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Scores the texts with the reference model (one call of N rows) and records
    /// agreement and the gap for each. A reference that fails is logged and not counted:
    /// it says nothing about this model.
    pub async fn compare(&self, mut answered: Vec<Answered>, metrics: &Metrics) {
        // The texts are copied only for a server allowed to keep texts.
        let texts: Vec<String> = answered
            .iter_mut()
            .map(|a| if self.keep_texts { a.text.clone() } else { std::mem::take(&mut a.text) })
            .collect();
        let reference = match self.reference.classify_batch(texts).await {
            Ok(p) => p,
            // Under overload the comparison is skipped, not the answer: it is a sample.
            Err(PoolError::Overloaded) => return,
            Err(e) => {
                tracing::warn!(reference_version = %self.reference_version, "reference model failed: {e}");
                return;
            }
        };
        let Predictions { spam_probabilities, card, .. } = reference;
        for (answered, reference_p) in answered.into_iter().zip(spam_probabilities) {
            self.record(answered, reference_p, &card, metrics);
        }
    }

    fn record(&self, answered: Answered, reference_p: f32, card: &ModelCard, metrics: &Metrics) {
        let Answered { text, label, spam_probability, guess, trace_id } = answered;
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
            text: if self.keep_texts { text } else { String::new() },
        };
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        if sample.newest_first.len() == self.capacity {
            sample.newest_first.pop_back();
        }
        sample.newest_first.push_front(kept);
        sample.generation += 1;
    }

    /// The sample's current encoding, made at most once per change. While unread answers
    /// pin more than `PINNED_BYTES`, the newest existing one is served instead.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let mut cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.sample.lock().unwrap_or_else(|e| e.into_inner()).generation;
        if let Some(s) = cached.as_ref()
            && (s.generation == generation || self.pinned.load(Ordering::Relaxed) > PINNED_BYTES)
        {
            return s.clone();
        }
        let fresh = Arc::new(self.encode());
        *cached = Some(fresh.clone());
        fresh
    }

    /// Bytes that snapshots still hold (the cached one and those unread answers pin).
    pub fn pinned_bytes(&self) -> usize {
        self.pinned.load(Ordering::Relaxed)
    }

    fn encode(&self) -> Snapshot {
        let sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for d in &sample.newest_first {
            let before = bytes.len();
            prost::encoding::message::encode(1, d, &mut bytes);
            if bytes.len() > ANSWER_BYTES {
                bytes.truncate(before);
                break;
            }
            ends.push(bytes.len());
        }
        bytes.shrink_to_fit();
        self.pinned.fetch_add(bytes.len(), Ordering::Relaxed);
        Snapshot {
            generation: sample.generation,
            ends,
            kept: sample.newest_first.len(),
            entries: Bytes::from_owner(Pinned { bytes, pinned: self.pinned.clone() }),
            capacity: self.capacity as u32,
            seen: self.seen.load(Ordering::Relaxed),
        }
    }
}
