//! The canary's rules: app `candidate` (with the cache) against app `baseline` on users'
//! requests, as the app and the ingress gateway counted them.

use anyhow::Result;

use super::{
    Experiment, Settings, Unit,
    builder::{Builder, Header},
    check::Check,
    query::Query,
    samples::{histogram, total},
    thresholds::{CANARY_CALLS_RATIO, CANARY_ERROR_MARGIN, GUESS_MARGIN},
};
use crate::prom::{Counts, Prometheus, Sample};
use crate::stats::{Count, Interval};

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
    pub async fn read(prom: &impl Counts, s: &Settings) -> Result<Self> {
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
