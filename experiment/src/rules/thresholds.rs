//! The margins and thresholds of the decision rules: the one home of the numbers.
//! docs/experiment.md, the chart's Flagger thresholds and the shadow alert state them, and
//! tests/house checks them against these.

/// Canary: v2's 5xx share may exceed v1's by at most this (0.5 percentage point).
pub const CANARY_ERROR_MARGIN: f64 = 0.005;
/// Canary: v2 must need at most this many model calls per classification as v1 does.
pub const CANARY_CALLS_RATIO: f64 = 0.8;
/// Both: the candidate's agreement with users' guesses may be at most this much lower.
pub const GUESS_MARGIN: f64 = 0.02;
/// Shadow: its server error share may exceed the serving model's by at most this.
pub const SHADOW_ERROR_MARGIN: f64 = 0.005;
/// Shadow: its inference p95 must stay under this (seconds).
pub const SHADOW_P95_LIMIT: f64 = 0.005;
/// Shadow: it must agree with the serving model on at least this share of messages,
/// unless users' guesses show that it is the better one.
pub const SHADOW_MIN_AGREEMENT: f64 = 0.90;
