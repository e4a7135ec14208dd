//! Always-valid 95 % intervals for proportions, their differences and histogram quantiles.
//!
//! Operators look at the verdict every few minutes. A fixed-sample interval checked again
//! and again misses the truth far more often than 5 % of the time (see the tests), so every
//! interval here is a *confidence sequence*: it holds at every look at once. We use the
//! normal-mixture mSPRT of Johari, Pekelis and Walsh ("Always valid inference", 2017;
//! the form Optimizely ships): for an estimate with variance `v` and a mixing scale `tau`
//! (the size of effect we care about), the interval is
//!
//! ```text
//! estimate ± sqrt( 2 v (v + tau²) / tau² · ln( sqrt((v + tau²) / v) / alpha ) )
//! ```
//!
//! Counts come from Prometheus' `increase()`, so they may be fractional; that is harmless.

use serde::Serialize;

/// 95 % intervals.
pub const ALPHA: f64 = 0.05;

/// An estimate with its always-valid interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// Half-width of the mSPRT confidence sequence for an estimate with variance `var`.
pub fn half_width(var: f64, tau: f64, alpha: f64) -> f64 {
    if var <= 0.0 {
        return 0.0;
    }
    let t2 = tau * tau;
    let log_term = (((var + t2) / var).sqrt() / alpha).ln();
    (2.0 * var * (var + t2) / t2 * log_term).sqrt()
}

/// `hits` out of `n` (e.g. 5xx answers out of requests).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Count {
    pub hits: f64,
    pub n: f64,
}

impl Count {
    pub fn new(hits: f64, n: f64) -> Self {
        // increase() may extrapolate a little past the total; a share stays within [0, 1].
        let n = n.max(0.0);
        Count { hits: hits.clamp(0.0, n), n }
    }

    pub fn share(&self) -> Option<f64> {
        (self.n > 0.0).then(|| self.hits / self.n)
    }

    /// The same share with `k` times the traffic (to ask "how much more is needed?").
    pub fn scaled(&self, k: f64) -> Self {
        Count { hits: self.hits * k, n: self.n * k }
    }

    /// Variance of the share. The share is smoothed by one success and one failure, so that
    /// 0 errors out of 50 does not claim a variance (and an interval) of zero.
    fn variance(&self) -> f64 {
        let p = (self.hits + 1.0) / (self.n + 2.0);
        p * (1.0 - p) / self.n
    }
}

/// Always-valid interval of a linear combination `sum(weight_i * share_i)` of independent
/// shares: one share (`[(1, p)]`), a difference (`[(1, p2), (-1, p1)]`) or a ratio test
/// written as a difference (`[(1, p2), (-0.8, p1)]` for "p2 at most 0.8 times p1").
/// `None` until every share has traffic.
pub fn contrast(terms: &[(f64, Count)], tau: f64) -> Option<Interval> {
    let mut estimate = 0.0;
    let mut var = 0.0;
    for (w, c) in terms {
        estimate += w * c.share()?;
        var += w * w * c.variance();
    }
    let h = half_width(var, tau, ALPHA);
    Some(Interval { estimate, low: estimate - h, high: estimate + h })
}

/// Mixing scale for the per-bucket shares of a latency histogram.
const QUANTILE_TAU: f64 = 0.02;

/// A latency histogram summed over the window: `(upper bound, cumulative count)` per
/// bucket, ascending, the last bound `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    pub fn scaled(&self, k: f64) -> Self {
        Histogram { buckets: self.buckets.iter().map(|&(le, c)| (le, c * k)).collect() }
    }

    /// The q-quantile as Prometheus' `histogram_quantile` computes it (linear within the
    /// bucket), with an always-valid interval at bucket resolution: the quantile is above
    /// every bound whose cumulative share is surely below q, and at most the first bound
    /// whose share is surely at least q (`+Inf` until the data shows one). `None` without data.
    pub fn quantile(&self, q: f64) -> Option<Interval> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let (mut low, mut high) = (0.0, f64::INFINITY);
        for &(le, cum) in self.buckets.iter().filter(|b| b.0.is_finite()) {
            let share = contrast(&[(1.0, Count::new(cum, total))], QUANTILE_TAU)?;
            if share.high < q {
                low = le;
            }
            if share.low >= q && high.is_infinite() {
                high = le;
            }
        }
        Some(Interval { estimate: self.point_quantile(q, total), low, high })
    }

    fn point_quantile(&self, q: f64, total: f64) -> f64 {
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    // As Prometheus does: the highest finite bound.
                    return prev.0;
                }
                let in_bucket = cum - prev.1;
                return if in_bucket > 0.0 { prev.0 + (le - prev.0) * (rank - prev.1) / in_bucket } else { le };
            }
            prev = (le, cum);
        }
        prev.0
    }
}

/// Smallest traffic multiple `k >= 1` (of the traffic so far) at which `decided(k)` holds,
/// assuming the shares stay where they are; `None` if not even 1000 times would do.
pub fn traffic_multiple_needed(decided: impl Fn(f64) -> bool) -> Option<f64> {
    const MAX: f64 = 1000.0;
    if decided(1.0) {
        return Some(1.0);
    }
    if !decided(MAX) {
        return None;
    }
    // The interval narrows as traffic grows: bisect on a log scale.
    let (mut lo, mut hi) = (1.0f64, MAX);
    while hi / lo > 1.01 {
        let mid = (lo * hi).sqrt();
        if decided(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64), so the simulations are reproducible
    /// without a dependency.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Share of simulated experiments in which the interval for p2 - p1 missed the true
    /// difference at *any* of the looks (every `look_every` observations per arm).
    fn miss_rate(interval: impl Fn(Count, Count) -> Interval, p1: f64, p2: f64) -> f64 {
        let (runs, per_arm, look_every) = (400, 3000, 25);
        let mut rng = Rng(20261130);
        let mut missed = 0;
        for _ in 0..runs {
            let (mut x1, mut x2) = (0.0, 0.0);
            for i in 1..=per_arm {
                x1 += f64::from(rng.uniform() < p1);
                x2 += f64::from(rng.uniform() < p2);
                if i % look_every == 0 {
                    let iv = interval(Count::new(x1, i as f64), Count::new(x2, i as f64));
                    if !(iv.low <= p2 - p1 && p2 - p1 <= iv.high) {
                        missed += 1;
                        break;
                    }
                }
            }
        }
        missed as f64 / runs as f64
    }

    fn fixed_sample(c1: Count, c2: Count) -> Interval {
        let (a, b) = (c1.share().unwrap(), c2.share().unwrap());
        let h = 1.96 * (a * (1.0 - a) / c1.n + b * (1.0 - b) / c2.n).sqrt();
        Interval { estimate: b - a, low: b - a - h, high: b - a + h }
    }

    #[test]
    fn confidence_sequence_holds_under_repeated_looks_where_a_fixed_interval_does_not() {
        let sequential = |c1, c2| contrast(&[(1.0, c2), (-1.0, c1)], 0.02).unwrap();
        for (p1, p2) in [(0.5, 0.5), (0.8, 0.78), (0.05, 0.05)] {
            let fixed = miss_rate(fixed_sample, p1, p2);
            let always_valid = miss_rate(sequential, p1, p2);
            println!(
                "p1={p1} p2={p2}: 120 looks miss the truth: fixed-sample {fixed:.3}, always-valid {always_valid:.3}"
            );
            assert!(always_valid <= ALPHA, "confidence sequence missed in {always_valid} of runs");
            assert!(fixed > 2.0 * ALPHA, "the fixed-sample interval should fail under peeking ({fixed})");
        }
    }

    #[test]
    fn interval_narrows_with_traffic_and_is_never_zero_width() {
        let none = Count::new(0.0, 50.0);
        let iv = contrast(&[(1.0, none)], 0.005).unwrap();
        assert_eq!(iv.estimate, 0.0);
        assert!(iv.high > 0.0, "0 of 50 is not proof of a zero share");
        let wide = contrast(&[(1.0, Count::new(100.0, 1000.0))], 0.02).unwrap();
        let narrow = contrast(&[(1.0, Count::new(1000.0, 10000.0))], 0.02).unwrap();
        assert!(narrow.high - narrow.low < 0.5 * (wide.high - wide.low));
        assert!(contrast(&[(1.0, Count::new(0.0, 0.0))], 0.02).is_none());
    }

    #[test]
    fn wider_than_a_fixed_sample_interval_by_a_modest_factor() {
        // The price of looking at any time: at 10,000 observations about 1.5-2x wider.
        let c = Count::new(5000.0, 10000.0);
        let h = contrast(&[(1.0, c)], 0.02).unwrap();
        let fixed = 1.96 * (0.25f64 / 10000.0).sqrt();
        let ratio = (h.high - h.estimate) / fixed;
        assert!((1.2..2.5).contains(&ratio), "{ratio}");
    }

    #[test]
    fn quantile_matches_histogram_quantile_and_brackets_the_bucket() {
        // 1000 requests: 900 under 10 ms, 90 in (10, 25] ms, 10 in (25, 50] ms.
        let h = Histogram {
            buckets: vec![(0.005, 0.0), (0.01, 900.0), (0.025, 990.0), (0.05, 1000.0), (f64::INFINITY, 1000.0)],
        };
        let p95 = h.quantile(0.95).unwrap();
        // histogram_quantile: 0.01 + 0.015 * (950 - 900) / 90
        assert!((p95.estimate - (0.01 + 0.015 * 50.0 / 90.0)).abs() < 1e-12);
        assert_eq!((p95.low, p95.high), (0.01, 0.025));
        // Few requests: the upper bound is not known yet.
        let few = h.scaled(0.01).quantile(0.95).unwrap();
        assert_eq!(few.high, f64::INFINITY);
        assert!(Histogram { buckets: vec![(f64::INFINITY, 0.0)] }.quantile(0.95).is_none());
    }

    #[test]
    fn traffic_needed_is_found_by_scaling() {
        // A 1-point drop in a 10 % share: how much traffic until the interval excludes 0?
        let (c1, c2) = (Count::new(100.0, 1000.0), Count::new(90.0, 1000.0));
        let decided = |k: f64| contrast(&[(1.0, c2.scaled(k)), (-1.0, c1.scaled(k))], 0.02).unwrap().high < 0.0;
        let k = traffic_multiple_needed(decided).unwrap();
        assert!(k > 5.0 && k < 1000.0, "{k}");
        assert!(decided(k) && !decided(k / 1.05));
        assert_eq!(traffic_multiple_needed(|_| false), None);
        assert_eq!(traffic_multiple_needed(|_| true), Some(1.0));
    }
}
