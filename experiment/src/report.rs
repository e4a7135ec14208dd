//! The verdict as text for people and as JSON for scripts, and the exit code.

use crate::rules::{Experiment, Row, Status, Unit, Verdict};
use crate::stats::Interval;

/// Exit codes (documented in docs/experiment.md): the worst verdict of the experiments.
pub fn exit_code(experiments: &[Experiment]) -> u8 {
    match experiments.iter().map(|e| e.verdict).max() {
        Some(Verdict::RollBack) => 2,
        Some(Verdict::KeepRunning) => 1,
        Some(Verdict::Promote) | None => 0,
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Promote => "PROMOTE",
        Verdict::KeepRunning => "KEEP RUNNING",
        Verdict::RollBack => "ROLL BACK",
    }
}

pub fn text(experiments: &[Experiment], window_secs: u64) -> String {
    let mut out = String::new();
    for e in experiments {
        out += &format!("{}  (window {}, 95 % always-valid intervals)\n", e.title, duration(window_secs));
        out += &format!("  verdict: {}: {}\n", verdict_name(e.verdict), e.reason);
        if let Some(more) = e.more_needed {
            let bound = if e.more_needed_is_lower_bound { "more than" } else { "about" };
            out += &format!("  needs {bound} {} more {} (has {})\n", round(more), e.traffic_unit, thousands(e.traffic));
        }
        let head =
            ["figure", &e.baseline, &e.candidate, &format!("{} - {}", e.candidate, e.baseline), "rule", "status"];
        let mut lines = vec![head.map(str::to_owned)];
        for r in &e.rows {
            lines.push(row_cells(r));
        }
        let widths: Vec<usize> =
            (0..6).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        for l in lines {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out += &format!("  {}\n", cells.join("  ").trim_end());
        }
        out += "\n";
    }
    out
}

fn row_cells(r: &Row) -> [String; 6] {
    let status = match r.status {
        crate::rules::Status::Info => String::new(),
        s => serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
    };
    [
        r.figure.to_owned(),
        r.baseline.map_or(String::new(), |iv| value(r.unit, iv)),
        r.candidate.map_or(String::new(), |iv| value(r.unit, iv)),
        r.difference
            .filter(|_| !matches!(r.unit, Unit::Count | Unit::Number))
            .map_or(String::new(), |iv| diff(r.unit, iv)),
        r.rule.clone(),
        status,
    ]
}

fn value(unit: Unit, iv: Interval) -> String {
    match unit {
        Unit::Count => thousands(iv.estimate),
        Unit::Number => format!("{:.3}", iv.estimate),
        Unit::Share if iv.low == iv.high => format!("{:.2} %", iv.estimate * 100.0),
        Unit::Share => format!(
            "{:.2} % [{:.2}, {:.2}]",
            iv.estimate * 100.0,
            (iv.low.max(0.0)) * 100.0,
            (iv.high.min(1.0)) * 100.0
        ),
        Unit::Seconds => format!("{} [{}, {}]", ms(iv.estimate), ms(iv.low), ms(iv.high)),
    }
}

fn diff(unit: Unit, iv: Interval) -> String {
    match unit {
        Unit::Seconds => format!("{:+.2} ms [{}, {}]", iv.estimate * 1000.0, signed_ms(iv.low), signed_ms(iv.high)),
        _ => format!("{:+.2} pp [{:+.2}, {:+.2}]", iv.estimate * 100.0, iv.low * 100.0, iv.high * 100.0),
    }
}

fn ms(s: f64) -> String {
    if s.is_finite() { format!("{:.2} ms", s * 1000.0) } else { "inf".to_owned() }
}

fn signed_ms(s: f64) -> String {
    if s.is_finite() {
        format!("{:+.2}", s * 1000.0)
    } else if s > 0.0 {
        "+inf".into()
    } else {
        "-inf".into()
    }
}

/// An estimate of traffic to two significant figures ("about 2,300").
fn round(x: f64) -> String {
    let x = x.max(0.0);
    if x >= 100.0 {
        let scale = 10f64.powi(x.log10().floor() as i32 - 1);
        thousands((x / scale).round() * scale)
    } else {
        thousands(x)
    }
}

/// A count with thousands separators.
fn thousands(x: f64) -> String {
    // `+ 0.0` turns a -0 (an empty increase()) into 0.
    let digits = format!("{:.0}", x.max(0.0).round() + 0.0);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn duration(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One line per experiment for a webhook's answer (Flagger shows it in its events): the
/// verdict, its reason, the traffic and every gating figure that failed or is not decided
/// yet, with its interval and rule.
pub fn summary(experiments: &[Experiment]) -> String {
    let mut lines = Vec::new();
    for e in experiments {
        let mut parts = vec![format!("{}: {}: {}", e.name, verdict_name(e.verdict), e.reason)];
        parts.push(format!("{} {}", thousands(e.traffic), e.traffic_unit));
        if let Some(more) = e.more_needed {
            let bound = if e.more_needed_is_lower_bound { "more than" } else { "about" };
            parts.push(format!("needs {bound} {} more", round(more)));
        }
        for r in e.rows.iter().filter(|r| matches!(r.status, Status::Fail | Status::Undecided)) {
            let [figure, base, cand, difference, rule, status] = row_cells(r);
            let mut figures = Vec::new();
            if !base.is_empty() {
                figures.push(format!("{} {base}", e.baseline));
            }
            if !cand.is_empty() {
                figures.push(format!("{} {cand}", e.candidate));
            }
            if !difference.is_empty() {
                figures.push(format!("difference {difference}"));
            }
            let figures = if figures.is_empty() { "no data".to_owned() } else { figures.join(", ") };
            parts.push(format!("{figure} {status}: {figures} (rule {rule})"));
        }
        lines.push(parts.join("; "));
    }
    lines.join("\n")
}

pub fn json(experiments: &[Experiment], window_secs: u64) -> String {
    let doc = serde_json::json!({
        "window_seconds": window_secs,
        "exit_code": exit_code(experiments),
        "experiments": experiments,
    });
    serde_json::to_string_pretty(&doc).expect("a report is plain data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_counts_for_reading() {
        assert_eq!(round(2287.0), "2,300");
        assert_eq!(round(41.4), "41");
        assert_eq!(round(1234567.0), "1,200,000");
        assert_eq!(thousands(21612.4), "21,612");
        assert_eq!(thousands(-0.0), "0");
        assert_eq!(duration(86400), "1d");
        assert_eq!(duration(900), "15m");
    }
}
