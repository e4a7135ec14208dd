//! The rows of a report built side by side with their checks, then the verdict: a check
//! clearly failed rolls back, every check passed with enough evidence promotes, and
//! otherwise the experiment keeps running, with an estimate of the traffic still needed.

use super::{Experiment, Row, Settings, Status, Unit, Verdict, check::Check};
use crate::stats::{Count, Histogram, Interval, contrast, traffic_multiple_needed};

/// Builds rows and checks side by side, then turns them into a verdict.
pub(super) struct Builder {
    pub(super) rows: Vec<Row>,
    /// Each check with the index of its row.
    pub(super) checks: Vec<(usize, Check)>,
}

impl Builder {
    pub(super) fn info(&mut self, figure: &'static str, unit: Unit, base: Option<Interval>, cand: Option<Interval>) {
        let difference = match (base, cand) {
            (Some(b), Some(c)) => {
                Some(Interval { estimate: c.estimate - b.estimate, low: c.low - b.high, high: c.high - b.low })
            }
            _ => None,
        };
        let has_data = cand.is_some();
        self.rows.push(Row {
            figure,
            unit,
            baseline: base,
            candidate: cand,
            difference,
            rule: String::new(),
            status: Status::Info,
            has_data,
        });
    }

    /// A share per version and its difference, with a rule on the difference.
    pub(super) fn share(
        &mut self,
        figure: &'static str,
        base: Count,
        cand: Count,
        tau: f64,
        rule: String,
        check: Check,
    ) {
        // A share lies in [0, 1] whatever the normal approximation says.
        let one = |c: Count| {
            contrast(&[(1.0, c)], tau).map(|iv| Interval { low: iv.low.max(0.0), high: iv.high.min(1.0), ..iv })
        };
        let status = check.status(1.0);
        self.rows.push(Row {
            figure,
            unit: Unit::Share,
            baseline: one(base),
            candidate: one(cand),
            difference: contrast(&[(1.0, cand), (-1.0, base)], tau),
            rule,
            status,
            has_data: base.n > 0.0 && cand.n > 0.0,
        });
        self.checks.push((self.rows.len() - 1, check));
    }

    /// A share of the candidate against the baseline's, their difference bounded by
    /// `margin`: at most `margin` higher (a bad share, e.g. errors) or at most `margin`
    /// lower (a good one, e.g. agreement).
    pub(super) fn share_within(
        &mut self,
        figure: &'static str,
        (base, cand): (Count, Count),
        margin: f64,
        higher_is_better: bool,
        names: (&str, &str),
    ) {
        let (base_name, cand_name) = names;
        let rule = if higher_is_better {
            format!("{cand_name} - {base_name} >= -{}", pp(margin))
        } else {
            format!("{cand_name} - {base_name} <= +{}", pp(margin))
        };
        let limit = if higher_is_better { -margin } else { margin };
        let check = Check::Bound { terms: vec![(1.0, cand), (-1.0, base)], tau: margin, limit, higher_is_better };
        self.share(figure, base, cand, margin, rule, check);
    }

    pub(super) fn p95(
        &mut self,
        figure: &'static str,
        base: &Histogram,
        cand: &Histogram,
        rule: String,
        check: Option<Check>,
    ) {
        self.info(figure, Unit::Seconds, base.quantile(0.95), cand.quantile(0.95));
        if let Some(check) = check {
            let row = self.rows.last_mut().expect("just pushed");
            row.has_data = base.total() > 0.0 && cand.total() > 0.0;
            row.rule = rule;
            row.status = check.status(1.0);
            self.checks.push((self.rows.len() - 1, check));
        }
    }

    pub(super) fn finish(self, header: Header, settings: &Settings, traffic: f64, ran_long_enough: bool) -> Experiment {
        let failed: Vec<_> = self.rows.iter().filter(|r| r.status == Status::Fail).map(|r| r.figure).collect();
        let mut more_needed = None;
        let mut lower_bound = false;
        let (verdict, reason) = if !failed.is_empty() {
            (Verdict::RollBack, format!("clearly outside the rule: {}", failed.join(", ")))
        } else if traffic <= 0.0 {
            more_needed = Some(settings.min_samples);
            (Verdict::KeepRunning, format!("no {} in the window yet", header.traffic_unit))
        } else {
            // Traffic needed for every undecided check, at the figures seen so far; a
            // figure without data gives no estimate (more traffic alone will not bring it).
            let mut multiple: f64 = 1.0;
            let mut missing = false;
            for (row, check) in &self.checks {
                let row = &self.rows[*row];
                if row.status != Status::Undecided {
                    continue;
                }
                if !row.has_data {
                    missing = true;
                    continue;
                }
                match traffic_multiple_needed(|k| check.status(k) != Status::Undecided) {
                    Some(k) => multiple = multiple.max(k),
                    None => {
                        multiple = multiple.max(1000.0);
                        lower_bound = true;
                    }
                }
            }
            let needed = (multiple * traffic).max(settings.min_samples) - traffic;
            let undecided: Vec<_> = self
                .rows
                .iter()
                .filter(|r| r.status == Status::Undecided)
                .map(|r| if r.has_data { r.figure.to_owned() } else { format!("{} (no data)", r.figure) })
                .collect();
            if undecided.is_empty() && needed <= 0.0 && ran_long_enough {
                (Verdict::Promote, "every rule holds".to_owned())
            } else {
                let mut why = Vec::new();
                if !undecided.is_empty() {
                    why.push(format!("not decided yet: {}", undecided.join(", ")));
                }
                if traffic < settings.min_samples {
                    why.push(format!("minimum evidence is {:.0} {}", settings.min_samples, header.traffic_unit));
                }
                if !ran_long_enough {
                    why.push(format!(
                        "{} has not run for the minimum duration ({} s) yet",
                        header.candidate, settings.min_duration_secs
                    ));
                }
                more_needed = (!missing && needed > 0.0).then_some(needed);
                (Verdict::KeepRunning, why.join("; "))
            }
        };
        Experiment {
            name: header.name,
            title: header.title,
            baseline: header.baseline,
            candidate: header.candidate,
            verdict,
            reason,
            traffic_unit: header.traffic_unit,
            traffic,
            more_needed,
            more_needed_is_lower_bound: lower_bound,
            rows: self.rows,
        }
    }
}

pub(super) struct Header {
    pub(super) name: &'static str,
    pub(super) title: String,
    pub(super) baseline: String,
    pub(super) candidate: String,
    pub(super) traffic_unit: String,
}

fn pp(x: f64) -> String {
    format!("{:.1} pp", x * 100.0)
}
