//! A gating rule as a function of the traffic, so that one piece of code says whether a
//! figure is decided and how much more traffic would decide it.

use super::Status;
use crate::stats::{Count, Histogram, contrast};

/// A gating rule as a function of "k times the traffic so far", so that the same code
/// answers "is it decided?" (k = 1) and "how much more traffic would decide it?".
pub(super) enum Check {
    /// `sum(weight * share)` compared with `limit`.
    Bound { terms: Vec<(f64, Count)>, tau: f64, limit: f64, higher_is_better: bool },
    /// The candidate's p95 is not above the baseline's (at bucket resolution).
    P95NotAbove { candidate: Histogram, baseline: Histogram },
    /// The candidate's p95 is under a fixed limit.
    P95Below { candidate: Histogram, limit: f64 },
    /// Either check passes (the shadow's agreement, or its guesses being better).
    Either(Box<Check>, Box<Check>),
}

impl Check {
    pub(super) fn status(&self, k: f64) -> Status {
        match self {
            Check::Bound { terms, tau, limit, higher_is_better } => {
                let scaled: Vec<_> = terms.iter().map(|(w, c)| (*w, c.scaled(k))).collect();
                let Some(iv) = contrast(&scaled, *tau) else { return Status::Undecided };
                let (pass, fail) = if *higher_is_better {
                    (iv.low >= *limit, iv.high < *limit)
                } else {
                    (iv.high <= *limit, iv.low > *limit)
                };
                if pass {
                    Status::Pass
                } else if fail {
                    Status::Fail
                } else {
                    Status::Undecided
                }
            }
            Check::P95NotAbove { candidate, baseline } => {
                let (Some(c), Some(b)) = (candidate.scaled(k).quantile(0.95), baseline.scaled(k).quantile(0.95)) else {
                    return Status::Undecided;
                };
                if c.high.is_finite() && c.high <= b.high {
                    Status::Pass
                } else if b.high.is_finite() && c.low >= b.high {
                    // v2's p95 is above a bound that v1's p95 is surely under.
                    Status::Fail
                } else {
                    Status::Undecided
                }
            }
            Check::P95Below { candidate, limit } => match candidate.scaled(k).quantile(0.95) {
                Some(q) if q.high <= *limit => Status::Pass,
                Some(q) if q.low >= *limit => Status::Fail,
                _ => Status::Undecided,
            },
            Check::Either(a, b) => match (a.status(k), b.status(k)) {
                (Status::Pass, _) | (_, Status::Pass) => Status::Pass,
                (Status::Fail, Status::Fail) => Status::Fail,
                _ => Status::Undecided,
            },
        }
    }
}
