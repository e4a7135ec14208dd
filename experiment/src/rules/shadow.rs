//! The shadow's rules: model `candidate` on mirrored calls against the serving model
//! `baseline`, on errors, users' guesses, agreement with the serving model and speed.

use anyhow::Result;

use super::{
    Experiment, Row, Settings, Unit,
    builder::{Builder, Header},
    check::Check,
    query::Query,
    samples::{histogram, total},
    thresholds::{GUESS_MARGIN, SHADOW_ERROR_MARGIN, SHADOW_MIN_AGREEMENT, SHADOW_P95_LIMIT},
};
use crate::prom::{Counts, Prometheus, Sample};
use crate::stats::{Count, Interval, contrast};

/// gRPC codes that are the client's doing, not a server failure.
const CLIENT_CODES: [&str; 3] = ["Ok", "InvalidArgument", "Cancelled"];

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
    pub async fn read(prom: &impl Counts, s: &Settings) -> Result<Self> {
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
