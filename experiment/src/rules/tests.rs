//! The rules on answers a real Prometheus gave: each fixture holds this binary's
//! queries and Prometheus' answers to them over one scenario built with
//! experiment/tests/common (those of experiment/tests/verdict.rs, and one without any
//! series of v2), backfilled with promtool. The rules read them through their live path,
//! asked by the query texts they send now, and each answer passes `read_counts`, the
//! checks every live answer passes.

use serde_json::Value;

use super::canary::{CanaryAnswers, canary_verdict};
use super::shadow::{ShadowAnswers, shadow_verdict};
use super::thresholds::{CANARY_ERROR_MARGIN, SHADOW_MIN_AGREEMENT};
use super::*;
use crate::prom::{Counts, Sample, read_counts};

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
        "good" => include_str!("../../tests/fixtures/verdict/good.json"),
        "bad-canary" => include_str!("../../tests/fixtures/verdict/bad-canary.json"),
        "low" => include_str!("../../tests/fixtures/verdict/low.json"),
        "no-candidate" => include_str!("../../tests/fixtures/verdict/no-candidate.json"),
        _ => panic!("no fixture {name}"),
    };
    serde_json::from_str(text).unwrap()
}

/// One experiment's recorded answers, asked as a live Prometheus is: by the query text the
/// rules send now. A query the fixture did not record fails the test, so a fixture cannot
/// stand for queries the code no longer asks.
struct Recorded<'a>(&'a Value, std::sync::Mutex<Vec<String>>);

impl Counts for Recorded<'_> {
    fn counts(&self, promql: &str) -> impl std::future::Future<Output = anyhow::Result<Vec<Sample>>> + Send {
        let recorded = self.0.as_object().expect("an experiment's answers");
        self.1.lock().unwrap().push(promql.to_owned());
        let answer = match recorded.values().find(|r| r["query"].as_str() == Some(promql)) {
            Some(r) => {
                assert!(r["answer"].is_object(), "the fixture has no answer to {promql:?}");
                read_counts(promql, r["answer"].to_string().as_bytes())
            }
            None => {
                let queries: Vec<&str> = recorded.values().filter_map(|r| r["query"].as_str()).collect();
                panic!("the rules ask\n{promql}\nwhich the fixture did not record; it holds:\n{}", queries.join("\n"))
            }
        };
        std::future::ready(answer)
    }
}

/// The answers the rules read from experiment `part` ("canary" or "shadow") of a fixture,
/// through the live read path; every recorded query must be asked.
fn read<T>(name: &str, part: &str, read: impl AsyncFnOnce(&Recorded<'_>, &Settings) -> anyhow::Result<T>) -> T {
    let fixture = fixture(name);
    let recorded = Recorded(&fixture[part], Default::default());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let answers = runtime.block_on(read(&recorded, &settings(name))).unwrap_or_else(|e| panic!("{name} {part}: {e:#}"));
    let asked = recorded.1.into_inner().unwrap();
    for (key, r) in fixture[part].as_object().expect("an experiment's answers") {
        let query = r["query"].as_str().unwrap_or_else(|| panic!("{name} {part}: {key} has no query"));
        assert!(asked.iter().any(|q| q == query), "{name} {part}: the rules no longer ask {key}'s recorded query");
    }
    answers
}

fn canary_answers(name: &str) -> CanaryAnswers {
    read(name, "canary", async |prom, s| CanaryAnswers::read(prom, s).await)
}

fn canary_of(name: &str) -> Experiment {
    canary_verdict(&canary_answers(name), &settings(name))
}

fn shadow_of(name: &str) -> Experiment {
    let answers = read(name, "shadow", async |prom, s| ShadowAnswers::read(prom, s).await);
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
