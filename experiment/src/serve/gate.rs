//! The gate's verdicts: one per canary revision, computed at most a few at a time, reused
//! for `--cache`, and looking back only as far as the revision has run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{MAX_CACHED_NAMESPACES, MAX_VERDICTS_AT_ONCE, MIN_REVISION_WINDOW_SECS, Options};
use crate::prom::Prometheus;
use crate::rules::{self, Experiment};

/// The outcome of one verdict, shared by the calls that reuse it.
pub(super) type Outcome = Arc<Result<Vec<Experiment>, String>>;

struct Cached {
    at: Instant,
    outcome: Outcome,
}

/// One namespace's last verdict; its lock makes concurrent calls wait for one computation.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

pub struct Gate {
    prom: Prometheus,
    /// The CLI's settings; `namespace` set pins the gate to that namespace.
    pub(super) settings: rules::Settings,
    experiments: Vec<&'static str>,
    cache: Duration,
    pub(super) deadline: Duration,
    pub(super) per_revision: bool,
    turns: Semaphore,
    slots: Mutex<HashMap<String, Slot>>,
    /// When each canary's current revision (Flagger's checksum) was first seen: its verdict
    /// looks back only that far, so a revision never inherits an earlier one's data under
    /// the same version label (a canary rolled back, then tried again).
    revisions: Mutex<HashMap<String, (String, Instant)>>,
}

impl Gate {
    pub fn new(prom: Prometheus, settings: rules::Settings, experiments: Vec<&'static str>, options: &Options) -> Self {
        Gate {
            prom,
            settings,
            experiments,
            cache: options.cache,
            deadline: options.deadline,
            per_revision: options.per_revision,
            turns: Semaphore::new(MAX_VERDICTS_AT_ONCE),
            slots: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
        }
    }

    /// How long this canary's revision has been under analysis (since the gate first heard
    /// of its checksum); a new checksum starts a new run.
    pub(super) fn revision_age(&self, canary: &str, checksum: &str) -> Duration {
        let mut revisions = self.revisions.lock().expect("no panic holds this lock");
        if let Some((seen, since)) = revisions.get(canary)
            && seen == checksum
        {
            return since.elapsed();
        }
        if revisions.len() >= MAX_CACHED_NAMESPACES && !revisions.contains_key(canary) {
            // Forget the run heard of longest ago (bounded, as the verdict cache is).
            if let Some(oldest) = revisions.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                revisions.remove(&oldest);
            }
        }
        revisions.insert(canary.to_owned(), (checksum.to_owned(), Instant::now()));
        Duration::ZERO
    }

    /// The settings of one revision's verdict: its look-back is the time it has run (at
    /// least MIN_REVISION_WINDOW_SECS, at most --window).
    fn revision_settings(&self, namespace: &str, age: Duration) -> rules::Settings {
        let window = if self.per_revision {
            age.as_secs().max(MIN_REVISION_WINDOW_SECS).min(self.settings.window_secs)
        } else {
            self.settings.window_secs
        };
        rules::Settings { namespace: Some(namespace.to_owned()), window_secs: window, ..self.settings.clone() }
    }

    /// The namespace's verdict: reused if computed less than `cache` ago, else computed
    /// (once, however many calls wait for it).
    pub(super) async fn verdict(&self, namespace: &str, revision: &str, age: Duration) -> Outcome {
        let slot = self.slot(revision);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < self.cache
        {
            return c.outcome.clone();
        }
        let outcome = Arc::new(self.compute(self.revision_settings(namespace, age)).await);
        *cached = Some(Cached { at: Instant::now(), outcome: outcome.clone() });
        outcome
    }

    fn slot(&self, namespace: &str) -> Slot {
        let mut slots = self.slots.lock().expect("no panic holds this lock");
        if let Some(slot) = slots.get(namespace) {
            return slot.clone();
        }
        if slots.len() >= MAX_CACHED_NAMESPACES {
            // Forget the verdicts that are stale and not being computed.
            slots.retain(|_, s| s.try_lock().map_or(true, |c| c.as_ref().is_some_and(|c| c.at.elapsed() < self.cache)));
        }
        let slot = Slot::default();
        if slots.len() < MAX_CACHED_NAMESPACES {
            slots.insert(namespace.to_owned(), slot.clone());
        }
        slot
    }

    async fn compute(&self, settings: rules::Settings) -> Result<Vec<Experiment>, String> {
        let _turn = self.turns.acquire().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for which in &self.experiments {
            let experiment = match *which {
                "canary" => rules::canary(&self.prom, &settings).await,
                _ => rules::shadow(&self.prom, &settings).await,
            };
            out.push(experiment.map_err(|e| format!("{e:#}"))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_revision: bool) -> Gate {
        let settings = rules::Settings {
            window_secs: 600,
            min_samples: 10.0,
            min_duration_secs: 60,
            namespace: None,
            baseline: "v1".into(),
            candidate: "v2".into(),
        };
        let options = Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            cache: Duration::ZERO,
            deadline: Duration::from_secs(1),
            per_revision,
        };
        let prom = Prometheus::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
        Gate::new(prom, settings, vec!["canary"], &options)
    }

    #[test]
    fn a_revision_is_judged_over_the_time_it_has_run() {
        let g = gate(true);
        assert_eq!(g.revision_age("ns/app", "aaa"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        let age = g.revision_age("ns/app", "aaa");
        assert!(age >= Duration::from_millis(20), "the same checksum keeps its start: {age:?}");
        assert_eq!(g.revision_age("ns/app", "bbb"), Duration::ZERO, "a new checksum is a new run");
        // its look-back: at least a minute, at most --window
        assert_eq!(g.revision_settings("ns", Duration::from_secs(5)).window_secs, MIN_REVISION_WINDOW_SECS);
        assert_eq!(g.revision_settings("ns", Duration::from_secs(300)).window_secs, 300);
        assert_eq!(g.revision_settings("ns", Duration::from_secs(9000)).window_secs, 600);
        assert_eq!(gate(false).revision_settings("ns", Duration::from_secs(5)).window_secs, 600);
        // bounded: past MAX_CACHED_NAMESPACES canaries the oldest run is forgotten
        for i in 0..MAX_CACHED_NAMESPACES + 5 {
            g.revision_age(&format!("ns/app{i}"), "c");
        }
        assert!(g.revisions.lock().unwrap().len() <= MAX_CACHED_NAMESPACES);
    }
}
