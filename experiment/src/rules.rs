//! The decision rules of docs/experiment.md, evaluated on figures read from Prometheus.
//! Each gating figure is a check that passes, fails or is not decided yet; the margins and
//! thresholds below are the one home of the numbers: docs/experiment.md, the chart's Flagger
//! thresholds and the shadow alert state them and tests/house checks them against these.

use anyhow::Result;
use serde::Serialize;

use crate::prom::{Prometheus, Sample};
use crate::stats::{Count, Histogram, Interval, contrast, traffic_multiple_needed};

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

/// gRPC codes that are the client's doing, not a server failure.
const CLIENT_CODES: [&str; 3] = ["Ok", "InvalidArgument", "Cancelled"];

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

/// A gating rule as a function of "k times the traffic so far", so that the same code
/// answers "is it decided?" (k = 1) and "how much more traffic would decide it?".
enum Check {
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
    fn status(&self, k: f64) -> Status {
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

/// Builds rows and checks side by side, then turns them into a verdict.
struct Builder {
    rows: Vec<Row>,
    /// Each check with the index of its row.
    checks: Vec<(usize, Check)>,
}

impl Builder {
    fn info(&mut self, figure: &'static str, unit: Unit, base: Option<Interval>, cand: Option<Interval>) {
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
    fn share(&mut self, figure: &'static str, base: Count, cand: Count, tau: f64, rule: String, check: Check) {
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
    fn share_within(
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

    fn p95(&mut self, figure: &'static str, base: &Histogram, cand: &Histogram, rule: String, check: Option<Check>) {
        self.info(figure, Unit::Seconds, base.quantile(0.95), cand.quantile(0.95));
        if let Some(check) = check {
            let row = self.rows.last_mut().expect("just pushed");
            row.has_data = base.total() > 0.0 && cand.total() > 0.0;
            row.rule = rule;
            row.status = check.status(1.0);
            self.checks.push((self.rows.len() - 1, check));
        }
    }

    fn finish(self, header: Header, settings: &Settings, traffic: f64, ran_long_enough: bool) -> Experiment {
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

struct Header {
    name: &'static str,
    title: String,
    baseline: String,
    candidate: String,
    traffic_unit: String,
}

/// PromQL text for the settings: label matchers and the window.
struct Query<'a> {
    s: &'a Settings,
}

impl Query<'_> {
    /// `{m1,m2,namespace="..."}`
    fn sel(&self, matchers: &[&str]) -> String {
        let mut all: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
        if let Some(ns) = &self.s.namespace {
            all.push(format!("namespace={ns:?}"));
        }
        format!("{{{}}}", all.join(","))
    }

    fn versions(&self) -> String {
        // Version names are [A-Za-z0-9._-] (checked by the CLI); only the dot needs escaping.
        let re = |v: &str| v.replace('.', r"\\.");
        format!("version=~\"{}|{}\"", re(&self.s.baseline), re(&self.s.candidate))
    }

    fn increase(&self, by: &str, metric: &str, matchers: &[&str]) -> String {
        format!("sum by ({by}) (increase({metric}{}[{}s]))", self.sel(matchers), self.s.window_secs)
    }

    /// Requests the ingress gateway routed to each app version over the window, by
    /// `class` (`2`..`5` for 2xx..5xx): what users got, a canary's own silence included
    /// (dead, it counts nothing; the gateway answers 503). Istio's `istio_requests_total`
    /// as the gateway reports it, or plain Envoy's per-subset cluster counts (`make mesh`).
    fn gateway_responses(&self) -> String {
        let re = |v: &str| v.replace('.', r"\\.");
        let versions = format!("{}|{}", re(&self.s.baseline), re(&self.s.candidate));
        let (istio_ns, envoy_ns) = match &self.s.namespace {
            Some(ns) => (format!(", destination_service_namespace={ns:?}"), re(ns)),
            None => (String::new(), "[^|.]+".to_owned()),
        };
        let w = self.s.window_secs;
        format!(
            r#"sum by (version, class) (
  label_replace(label_replace(
    increase(istio_requests_total{{reporter="source", destination_service_name=~".+-app", destination_version=~"{versions}"{istio_ns}}}[{w}s]),
    "version", "$1", "destination_version", "(.+)"),
    "class", "$1", "response_code", "([1-5]).."))
or
sum by (version, class) (
  label_replace(label_replace(
    increase(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"outbound\\|[0-9]+\\|({versions})\\|[^|.]+-app\\.{envoy_ns}\\.svc\\..+"}}[{w}s]),
    "version", "$1", "envoy_cluster_name", "outbound\\|[0-9]+\\|([^|]+)\\|.+"),
    "class", "$1", "envoy_response_code_class", "(.+)"))"#
        )
    }

    /// Whether `metric{matchers}` already had a series `min_duration` ago.
    async fn existed_before(&self, prom: &Prometheus, metric: &str, matchers: &[&str]) -> Result<bool> {
        if self.s.min_duration_secs == 0 {
            return Ok(true);
        }
        let q = format!("count({metric}{} offset {}s)", self.sel(matchers), self.s.min_duration_secs);
        Ok(!prom.counts(&q).await?.is_empty())
    }
}

/// Sum of the samples whose labels pass `keep`.
fn total(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> f64 {
    samples.iter().filter(|s| keep(s) && s.value.is_finite()).map(|s| s.value).sum()
}

/// The cumulative buckets of one series' `le` samples.
fn histogram(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Histogram {
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

fn pp(x: f64) -> String {
    format!("{:.1} pp", x * 100.0)
}

/// What the canary's rules read from Prometheus: one answer per query.
pub struct CanaryAnswers {
    /// Users' requests by version and status (the app counts no scrapes or probes).
    pub requests: Vec<Sample>,
    pub classified: Vec<Sample>,
    pub calls: Vec<Sample>,
    /// By version and agreement.
    pub guesses: Vec<Sample>,
    /// Users' requests' latency buckets, by version and `le`.
    pub latency: Vec<Sample>,
    /// What the ingress gateway answered for each version, by `class`.
    pub gateway: Vec<Sample>,
    /// Whether the candidate already had series `min_duration` ago.
    pub ran_long_enough: bool,
}

impl CanaryAnswers {
    pub async fn read(prom: &Prometheus, s: &Settings) -> Result<Self> {
        let q = Query { s };
        let v = q.versions();
        let cand_sel = format!("version=\"{}\"", s.candidate);
        Ok(Self {
            requests: prom.counts(&q.increase("version, status", "sms_requests_total", &[&v])).await?,
            classified: prom.counts(&q.increase("version", "sms_messages_classified_total", &[&v])).await?,
            calls: prom.counts(&q.increase("version", "sms_model_calls_total", &[&v])).await?,
            guesses: prom.counts(&q.increase("version, agreement", "sms_guesses_total", &[&v])).await?,
            latency: prom.counts(&q.increase("version, le", "sms_request_latency_seconds_bucket", &[&v])).await?,
            gateway: prom.counts(&q.gateway_responses()).await?,
            ran_long_enough: q.existed_before(prom, "sms_messages_classified_total", &[&cand_sel]).await?,
        })
    }
}

/// Canary: app `candidate` (with the cache) against app `baseline`, both calling the serving model.
pub async fn canary(prom: &Prometheus, s: &Settings) -> Result<Experiment> {
    Ok(canary_verdict(&CanaryAnswers::read(prom, s).await?, s))
}

/// The canary's rules applied to Prometheus' answers.
pub fn canary_verdict(answers: &CanaryAnswers, s: &Settings) -> Experiment {
    let CanaryAnswers { requests, classified, calls, guesses, latency, gateway, ran_long_enough } = answers;
    let ran_long_enough = *ran_long_enough;
    let (base, cand) = (s.baseline.as_str(), s.candidate.as_str());

    let of = |ver: &str| {
        let ver = ver.to_owned();
        move |x: &Sample| x.label("version") == ver
    };
    // What users got: the worse of the app's own count and the gateway's, which also sees
    // the 503s of a canary that cannot answer (and so counts nothing itself).
    let errors = |ver: &str| {
        let app = (total(requests, |x| of(ver)(x) && x.label("status").starts_with('5')), total(requests, of(ver)));
        let gateway = (total(gateway, |x| of(ver)(x) && x.label("class") == "5"), total(gateway, of(ver)));
        Count::new(app.0.max(gateway.0), app.1.max(gateway.1))
    };
    let agreement = |ver: &str| {
        Count::new(total(guesses, |x| of(ver)(x) && x.label("agreement") == "agree"), total(guesses, of(ver)))
    };
    let calls_per_classification = |ver: &str| Count::new(total(calls, of(ver)), total(classified, of(ver)));
    let count = |c: f64| Some(Interval { estimate: c, low: c, high: c });

    let mut b = Builder { rows: Vec::new(), checks: Vec::new() };
    let traffic = total(classified, of(cand));
    b.info("classifications", Unit::Count, count(total(classified, of(base))), count(traffic));

    b.share_within("error share (5xx)", (errors(base), errors(cand)), CANARY_ERROR_MARGIN, false, (base, cand));
    b.share_within("guess agreement", (agreement(base), agreement(cand)), GUESS_MARGIN, true, (base, cand));
    let (m1, m2) = (calls_per_classification(base), calls_per_classification(cand));
    b.share(
        "model calls per classification",
        m1,
        m2,
        0.05,
        format!("{cand} <= {CANARY_CALLS_RATIO} x {base}"),
        Check::Bound {
            terms: vec![(1.0, m2), (-CANARY_CALLS_RATIO, m1)],
            tau: 0.05,
            limit: 0.0,
            higher_is_better: false,
        },
    );
    let (l1, l2) = (histogram(latency, of(base)), histogram(latency, of(cand)));
    b.p95(
        "p95 response time",
        &l1,
        &l2,
        format!("{cand} <= {base} (bucket resolution)"),
        Some(Check::P95NotAbove { candidate: l2.clone(), baseline: l1.clone() }),
    );

    let header = Header {
        name: "canary",
        title: format!("canary: app {cand} against stable app {base}"),
        baseline: base.to_owned(),
        candidate: cand.to_owned(),
        traffic_unit: format!("classifications on app {cand}"),
    };
    b.finish(header, s, traffic, ran_long_enough)
}

/// What the shadow's rules read from Prometheus: one answer per query.
pub struct ShadowAnswers {
    /// Model calls by version, source and gRPC code.
    pub requests: Vec<Sample>,
    /// By version, source and agreement.
    pub guesses: Vec<Sample>,
    /// Inference time buckets by version, source and `le`.
    pub inference: Vec<Sample>,
    /// The shadow's comparisons with the serving model, by outcome.
    pub comparisons: Vec<Sample>,
    /// The probability gap's buckets, by `le`.
    pub gap: Vec<Sample>,
    /// Whether the shadow already had series `min_duration` ago.
    pub ran_long_enough: bool,
}

impl ShadowAnswers {
    pub async fn read(prom: &Prometheus, s: &Settings) -> Result<Self> {
        let q = Query { s };
        let v = q.versions();
        let pair = [
            format!("version=\"{}\"", s.candidate),
            r#"source="shadow""#.to_owned(),
            format!("reference_version=\"{}\"", s.baseline),
        ];
        let pair: Vec<&str> = pair.iter().map(String::as_str).collect();
        Ok(Self {
            requests: prom.counts(&q.increase("version, source, code", "sms_model_requests_total", &[&v])).await?,
            guesses: prom.counts(&q.increase("version, source, agreement", "sms_model_guesses_total", &[&v])).await?,
            inference: prom
                .counts(&q.increase("version, source, le", "sms_model_inference_seconds_bucket", &[&v]))
                .await?,
            comparisons: prom.counts(&q.increase("outcome", "sms_shadow_comparisons_total", &pair)).await?,
            gap: prom.counts(&q.increase("le", "sms_shadow_probability_gap_bucket", &pair)).await?,
            ran_long_enough: q.existed_before(prom, "sms_model_requests_total", &pair[..2]).await?,
        })
    }
}

/// Shadow: model `candidate` on mirrored calls (`source="shadow"`) against the serving
/// model `baseline` (`source="app"`).
pub async fn shadow(prom: &Prometheus, s: &Settings) -> Result<Experiment> {
    Ok(shadow_verdict(&ShadowAnswers::read(prom, s).await?, s))
}

/// The shadow's rules applied to Prometheus' answers.
pub fn shadow_verdict(answers: &ShadowAnswers, s: &Settings) -> Experiment {
    let ShadowAnswers { requests, guesses, inference, comparisons, gap, ran_long_enough } = answers;
    let ran_long_enough = *ran_long_enough;
    let (base, cand) = (s.baseline.as_str(), s.candidate.as_str());

    // The serving model answers `source="app"`, the shadow `source="shadow"`.
    let of = |ver: &str, source: &'static str| {
        let ver = ver.to_owned();
        move |x: &Sample| x.label("version") == ver && x.label("source") == source
    };
    let (serving, shadowing) = (of(base, "app"), of(cand, "shadow"));
    let server_errors = |keep: &dyn Fn(&Sample) -> bool| {
        Count::new(total(requests, |x| keep(x) && !CLIENT_CODES.contains(&x.label("code"))), total(requests, keep))
    };
    let agreement = |keep: &dyn Fn(&Sample) -> bool| {
        Count::new(total(guesses, |x| keep(x) && x.label("agreement") == "agree"), total(guesses, keep))
    };
    let count = |c: f64| Some(Interval { estimate: c, low: c, high: c });

    let mut b = Builder { rows: Vec::new(), checks: Vec::new() };
    let traffic = total(requests, &shadowing);
    b.info("model calls", Unit::Count, count(total(requests, &serving)), count(traffic));

    let errors = (server_errors(&serving), server_errors(&shadowing));
    b.share_within("server error share", errors, SHADOW_ERROR_MARGIN, false, (base, cand));
    let (g1, g2) = (agreement(&serving), agreement(&shadowing));
    b.share_within("guess agreement", (g1, g2), GUESS_MARGIN, true, (base, cand));

    // Agreement with the serving model on the same messages: one share, the shadow's.
    let agree = Count::new(total(comparisons, |x| x.label("outcome") == "agree"), total(comparisons, |_| true));
    let agree_iv =
        contrast(&[(1.0, agree)], 0.02).map(|iv| Interval { low: iv.low.max(0.0), high: iv.high.min(1.0), ..iv });
    let guesses_better =
        Check::Bound { terms: vec![(1.0, g2), (-1.0, g1)], tau: GUESS_MARGIN, limit: 0.0, higher_is_better: true };
    let agreement_check = Check::Either(
        Box::new(Check::Bound {
            terms: vec![(1.0, agree)],
            tau: 0.02,
            limit: SHADOW_MIN_AGREEMENT,
            higher_is_better: true,
        }),
        Box::new(guesses_better),
    );
    b.rows.push(Row {
        figure: "agreement with serving model",
        unit: Unit::Share,
        baseline: None,
        candidate: agree_iv,
        difference: None,
        rule: format!(">= {:.0} %, or {cand}'s guess agreement above {base}'s", SHADOW_MIN_AGREEMENT * 100.0),
        status: agreement_check.status(1.0),
        has_data: agree.n > 0.0,
    });
    b.checks.push((b.rows.len() - 1, agreement_check));

    let gap = histogram(gap, |_| true);
    let gap_q = |q: f64| gap.quantile(q).map(|iv| Interval { low: iv.estimate, high: iv.estimate, ..iv });
    b.info("probability gap |p_shadow - p_serving| median", Unit::Number, None, gap_q(0.5));
    b.info("probability gap p95", Unit::Number, None, gap_q(0.95));

    let (l1, l2) = (histogram(inference, &serving), histogram(inference, &shadowing));
    b.p95(
        "p95 inference time",
        &l1,
        &l2,
        format!("{cand} < {} ms", SHADOW_P95_LIMIT * 1000.0),
        Some(Check::P95Below { candidate: l2.clone(), limit: SHADOW_P95_LIMIT }),
    );

    let header = Header {
        name: "shadow",
        title: format!("shadow: model {cand} (mirrored calls) against serving model {base}"),
        baseline: base.to_owned(),
        candidate: cand.to_owned(),
        traffic_unit: format!("mirrored calls to model {cand}"),
    };
    b.finish(header, s, traffic, ran_long_enough)
}

#[cfg(test)]
mod tests {
    //! The rules on answers a real Prometheus gave: each fixture holds this binary's
    //! queries and Prometheus' answers to them over one scenario built with
    //! experiment/tests/common (those of experiment/tests/verdict.rs, and one without any
    //! series of v2), backfilled with promtool. The answers go through `read_counts`, the
    //! checks every live answer passes, then through the rules.

    use serde_json::Value;

    use super::*;
    use crate::prom::read_counts;

    /// The settings the answers were recorded with: `--window 1h`, the default minimums.
    fn settings(namespace: &str) -> Settings {
        Settings {
            window_secs: 3600,
            min_samples: 1000.0,
            min_duration_secs: 3600,
            namespace: Some(namespace.to_owned()),
            baseline: "v1".to_owned(),
            candidate: "v2".to_owned(),
        }
    }

    fn fixture(name: &str) -> Value {
        let text = match name {
            "good" => include_str!("../tests/fixtures/verdict/good.json"),
            "bad-canary" => include_str!("../tests/fixtures/verdict/bad-canary.json"),
            "low" => include_str!("../tests/fixtures/verdict/low.json"),
            "no-candidate" => include_str!("../tests/fixtures/verdict/no-candidate.json"),
            _ => panic!("no fixture {name}"),
        };
        serde_json::from_str(text).unwrap()
    }

    /// The recorded answer to one query, read as a live one is.
    fn answer(experiment: &Value, key: &str) -> Vec<Sample> {
        let recorded = &experiment[key];
        let query = recorded["query"].as_str().unwrap_or_else(|| panic!("the fixture has no query {key:?}"));
        assert!(recorded["answer"].is_object(), "the fixture has no answer to {key:?}");
        read_counts(query, recorded["answer"].to_string().as_bytes()).unwrap_or_else(|e| panic!("{key}: {e:#}"))
    }

    fn canary_answers(name: &str) -> CanaryAnswers {
        let f = &fixture(name)["canary"];
        CanaryAnswers {
            requests: answer(f, "requests"),
            classified: answer(f, "classified"),
            calls: answer(f, "calls"),
            guesses: answer(f, "guesses"),
            latency: answer(f, "latency"),
            gateway: answer(f, "gateway"),
            ran_long_enough: !answer(f, "earlier").is_empty(),
        }
    }

    fn canary_of(name: &str) -> Experiment {
        canary_verdict(&canary_answers(name), &settings(name))
    }

    fn shadow_of(name: &str) -> Experiment {
        let f = &fixture(name)["shadow"];
        let answers = ShadowAnswers {
            requests: answer(f, "requests"),
            guesses: answer(f, "guesses"),
            inference: answer(f, "inference"),
            comparisons: answer(f, "comparisons"),
            gap: answer(f, "gap"),
            ran_long_enough: !answer(f, "earlier").is_empty(),
        };
        shadow_verdict(&answers, &settings(name))
    }

    /// Each row's figure, status and whether it had data.
    fn statuses(e: &Experiment) -> Vec<(&'static str, Status, bool)> {
        e.rows.iter().map(|r| (r.figure, r.status, r.has_data)).collect()
    }

    fn row<'a>(e: &'a Experiment, figure: &str) -> &'a Row {
        e.rows.iter().find(|r| r.figure == figure).unwrap_or_else(|| panic!("no row {figure}"))
    }

    use Status::{Fail, Info, Pass, Undecided};

    #[test]
    fn a_clearly_good_canary_and_shadow_are_promoted() {
        let canary = canary_of("good");
        assert_eq!((canary.verdict, canary.reason.as_str()), (Verdict::Promote, "every rule holds"));
        assert_eq!(
            statuses(&canary),
            [
                ("classifications", Info, true),
                ("error share (5xx)", Pass, true),
                ("guess agreement", Pass, true),
                ("model calls per classification", Pass, true),
                ("p95 response time", Pass, true),
            ]
        );
        assert_eq!((canary.traffic.round(), canary.more_needed), (3600.0, None));
        // v2 with the cache needs half the model calls of v1.
        let calls = row(&canary, "model calls per classification");
        assert!((calls.candidate.unwrap().estimate - 0.5).abs() < 0.001, "{calls:?}");
        assert!((calls.baseline.unwrap().estimate - 1.0).abs() < 0.001, "{calls:?}");

        let shadow = shadow_of("good");
        assert_eq!((shadow.verdict, shadow.reason.as_str()), (Verdict::Promote, "every rule holds"));
        assert_eq!(
            statuses(&shadow),
            [
                ("model calls", Info, true),
                ("server error share", Pass, true),
                ("guess agreement", Pass, true),
                ("agreement with serving model", Pass, true),
                ("probability gap |p_shadow - p_serving| median", Info, true),
                ("probability gap p95", Info, true),
                ("p95 inference time", Pass, true),
            ]
        );
        let agreement = row(&shadow, "agreement with serving model").candidate.unwrap();
        assert!((agreement.estimate - 0.97).abs() < 0.001 && agreement.low > SHADOW_MIN_AGREEMENT, "{agreement:?}");
    }

    #[test]
    fn a_canary_with_a_clearly_broken_error_share_is_rolled_back() {
        let canary = canary_of("bad-canary");
        assert_eq!(
            (canary.verdict, canary.reason.as_str()),
            (Verdict::RollBack, "clearly outside the rule: error share (5xx)")
        );
        assert_eq!(
            statuses(&canary),
            [
                ("classifications", Info, true),
                ("error share (5xx)", Fail, true),
                ("guess agreement", Pass, true),
                ("model calls per classification", Pass, true),
                ("p95 response time", Pass, true),
            ]
        );
        let errors = row(&canary, "error share (5xx)");
        let difference = errors.difference.unwrap();
        assert!((difference.estimate - 0.049).abs() < 0.001, "{errors:?}");
        assert!(difference.low > CANARY_ERROR_MARGIN, "surely more than the margin worse: {errors:?}");
        assert_eq!(canary.more_needed, None);
    }

    #[test]
    fn low_traffic_is_not_decided_and_says_how_much_more_is_needed() {
        let canary = canary_of("low");
        assert_eq!(canary.verdict, Verdict::KeepRunning);
        assert_eq!(
            canary.reason,
            "not decided yet: error share (5xx), guess agreement; minimum evidence is 1000 classifications on app v2"
        );
        assert_eq!(
            statuses(&canary),
            [
                ("classifications", Info, true),
                ("error share (5xx)", Undecided, true),
                ("guess agreement", Undecided, true),
                ("model calls per classification", Pass, true),
                ("p95 response time", Pass, true),
            ]
        );
        // About 180 in the hour; the minimum of 1000 and more: guess agreement needs it.
        assert!((170.0..190.0).contains(&canary.traffic), "{}", canary.traffic);
        let more = canary.more_needed.expect("how much more is needed");
        assert!(more > 1000.0 - canary.traffic && more < 100_000.0, "{more}");
        assert!(!canary.more_needed_is_lower_bound);

        let shadow = shadow_of("low");
        assert_eq!(shadow.verdict, Verdict::KeepRunning);
        assert_eq!(
            shadow.reason,
            "not decided yet: server error share, guess agreement; minimum evidence is 1000 mirrored calls to model v2"
        );
        assert_eq!(
            statuses(&shadow),
            [
                ("model calls", Info, true),
                ("server error share", Undecided, true),
                ("guess agreement", Undecided, true),
                ("agreement with serving model", Pass, true),
                ("probability gap |p_shadow - p_serving| median", Info, true),
                ("probability gap p95", Info, true),
                ("p95 inference time", Pass, true),
            ]
        );
        assert!(shadow.more_needed.is_some_and(|more| more > 1000.0 - shadow.traffic));
    }

    #[test]
    fn a_version_with_no_series_is_not_decided_and_says_so() {
        // v2 not deployed: no series of it at all.
        let canary = canary_of("no-candidate");
        assert_eq!(
            (canary.verdict, canary.reason.as_str()),
            (Verdict::KeepRunning, "no classifications on app v2 in the window yet")
        );
        assert_eq!(
            statuses(&canary),
            [
                ("classifications", Info, true),
                ("error share (5xx)", Undecided, false),
                ("guess agreement", Undecided, false),
                ("model calls per classification", Undecided, false),
                ("p95 response time", Undecided, false),
            ]
        );
        assert_eq!((canary.traffic, canary.more_needed), (0.0, Some(1000.0)));
        assert!(row(&canary, "error share (5xx)").candidate.is_none());
        let shadow = shadow_of("no-candidate");
        assert_eq!(
            (shadow.verdict, shadow.reason.as_str()),
            (Verdict::KeepRunning, "no mirrored calls to model v2 in the window yet")
        );
        assert!(
            shadow.rows.iter().all(|r| r.status == Info || (r.status == Undecided && !r.has_data)),
            "{:?}",
            statuses(&shadow)
        );

        // A shadow whose comparison metric has no series (a model service from before the
        // shadow compared itself): everything else passes, and the verdict waits, naming
        // the figure without data; more traffic alone would not bring it, so no estimate.
        let shadow = shadow_of("bad-canary");
        assert_eq!(
            (shadow.verdict, shadow.reason.as_str()),
            (Verdict::KeepRunning, "not decided yet: agreement with serving model (no data)")
        );
        assert_eq!(
            statuses(&shadow),
            [
                ("model calls", Info, true),
                ("server error share", Pass, true),
                ("guess agreement", Pass, true),
                ("agreement with serving model", Undecided, false),
                ("probability gap |p_shadow - p_serving| median", Info, false),
                ("probability gap p95", Info, false),
                ("p95 inference time", Pass, true),
            ]
        );
        assert_eq!(shadow.more_needed, None);
    }

    #[test]
    fn a_good_canary_waits_for_the_minimum_evidence_and_duration() {
        // The good canary's answers under a minimum of 10,000 classifications: every rule
        // holds, and the verdict still waits for the rest of the evidence.
        let answers = canary_answers("good");
        let strict = Settings { min_samples: 10_000.0, ..settings("good") };
        let canary = canary_verdict(&answers, &strict);
        assert_eq!(
            (canary.verdict, canary.reason.as_str()),
            (Verdict::KeepRunning, "minimum evidence is 10000 classifications on app v2")
        );
        assert!(canary.rows.iter().all(|r| matches!(r.status, Pass | Info)), "{:?}", statuses(&canary));
        let more = canary.more_needed.unwrap();
        assert!((more - (10_000.0 - canary.traffic)).abs() < 1e-6, "{more} {}", canary.traffic);

        // A canary whose series are younger than the minimum duration.
        let young = CanaryAnswers { ran_long_enough: false, ..answers };
        let canary = canary_verdict(&young, &settings("good"));
        assert_eq!(
            (canary.verdict, canary.reason.as_str()),
            (Verdict::KeepRunning, "v2 has not run for the minimum duration (3600 s) yet")
        );
        assert_eq!(canary.more_needed, None);
    }

    #[test]
    fn recorded_answers_pass_the_checks_of_live_ones() {
        // The fixtures go through `read_counts`: an answer the live path would refuse is
        // refused here too, so a fixture cannot feed the rules what Prometheus never says.
        let mut f = fixture("good");
        f["canary"]["classified"]["answer"]["data"]["result"][0]["value"][1] = "-5".into();
        let answer = f["canary"]["classified"]["answer"].to_string();
        let e = read_counts("q", answer.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").contains("a negative count"), "{e:#}");
        let mut f = fixture("good");
        f["shadow"]["gap"]["answer"]["data"]["resultType"] = "matrix".into();
        let e = read_counts("q", f["shadow"]["gap"]["answer"].to_string().as_bytes()).unwrap_err();
        assert_eq!(format!("{e:#}"), "`q` gave a matrix, not an instant vector");
    }
}
