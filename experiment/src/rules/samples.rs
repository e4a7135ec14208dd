//! Figures from Prometheus' answers: the sum of the series a filter keeps, and a
//! histogram from their `le` buckets.

use crate::prom::Sample;
use crate::stats::Histogram;

/// Sum of the samples whose labels pass `keep`.
pub(super) fn total(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> f64 {
    samples.iter().filter(|s| keep(s) && s.value.is_finite()).map(|s| s.value).sum()
}

/// The cumulative buckets of one series' `le` samples.
pub(super) fn histogram(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Histogram {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| keep(s))
        .filter_map(|s| {
            let le = match s.label("le") {
                "+Inf" => f64::INFINITY,
                x => x.parse().ok()?,
            };
            Some((le, if s.value.is_finite() { s.value } else { 0.0 }))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Histogram { buckets }
}
