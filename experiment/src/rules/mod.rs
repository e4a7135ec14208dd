//! The decision rules of docs/experiment.md, evaluated on figures read from Prometheus:
//! the report's vocabulary (settings, rows, verdicts) here, the rules of each experiment
//! in `canary` and `shadow`. Each gating figure is a `check::Check` that passes, fails or
//! is not decided yet; `builder` turns the checks into a verdict, `query` writes the PromQL
//! and `samples` sums the answers; `thresholds` is the one home of the numbers.

use serde::Serialize;

use crate::stats::Interval;

mod builder;
mod canary;
mod check;
mod query;
mod samples;
mod shadow;
#[cfg(test)]
mod tests;
mod thresholds;

pub use canary::canary;
pub use shadow::shadow;

#[derive(Clone)]
pub struct Settings {
    pub window_secs: u64,
    pub min_samples: f64,
    pub min_duration_secs: u64,
    pub namespace: Option<String>,
    pub baseline: String,
    pub candidate: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Promote,
    KeepRunning,
    RollBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Undecided,
    /// Shown for reading the experiment, not part of the rule.
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Share,
    Seconds,
    Count,
    /// A plain number such as a probability gap.
    Number,
}

/// One line of the report: a figure per version, their difference, the rule and its status.
#[derive(Debug, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub unit: Unit,
    pub baseline: Option<Interval>,
    pub candidate: Option<Interval>,
    /// candidate - baseline
    pub difference: Option<Interval>,
    pub rule: String,
    pub status: Status,
    /// False when a version the rule needs has no series in the window (not deployed,
    /// not scraped, or the metric is not exported yet).
    pub has_data: bool,
}

#[derive(Debug, Serialize)]
pub struct Experiment {
    pub name: &'static str,
    pub title: String,
    pub baseline: String,
    pub candidate: String,
    pub verdict: Verdict,
    pub reason: String,
    /// What the minimum evidence counts ("classifications on app v2", ...).
    pub traffic_unit: String,
    pub traffic: f64,
    /// For KEEP RUNNING: about how much more of `traffic_unit` is needed to decide.
    pub more_needed: Option<f64>,
    /// `more_needed` is only a lower bound: at the current figures even 1000 times the
    /// traffic would not decide (the difference sits on a margin).
    pub more_needed_is_lower_bound: bool,
    pub rows: Vec<Row>,
}
