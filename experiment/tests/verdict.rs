//! The real `sms-experiment` binary against a real Prometheus loaded with one scenario's
//! metrics: the series are written as OpenMetrics text, backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, and served by `prometheus` on a free
//! port of 127.0.0.1 (stopped by its PID when the test ends). Each scenario prints the
//! verdict it got, so the figures are in the test log (`cargo test -- --nocapture`).

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::*;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn experiment<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["experiments"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()
}

fn row<'a>(e: &'a serde_json::Value, figure: &str) -> &'a serde_json::Value {
    e["rows"].as_array().unwrap().iter().find(|r| r["figure"] == figure).unwrap_or_else(|| panic!("no row {figure}"))
}

/// Both experiments healthy: a serving model for both apps and a shadow that agrees.
fn good_shadow(s: &mut Scenario) {
    s.model("v1", "app", 360.0, 0.95, V1_INFERENCE);
    s.model("v2", "shadow", 360.0, 0.955, V2_INFERENCE);
    s.comparisons(360.0, 0.97, CLOSE_GAPS);
}

#[test]
fn good_canary_and_good_shadow_are_promoted() {
    let mut s = Scenario::new("good");
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 60.0, 0.0, 0.5, 0.95, true);
    good_shadow(&mut s);
    let prom = Prometheus::start(&s);

    let text = prom.verdict("good", &[]);
    assert_eq!(text.status.code(), Some(0), "exit code 0 = PROMOTE");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(stdout.matches("verdict: PROMOTE").count(), 2, "{stdout}");

    let doc = json(&prom.verdict("good", &["--json"]));
    assert_eq!(doc["exit_code"], 0);
    let canary = experiment(&doc, "canary");
    assert_eq!(canary["verdict"], "PROMOTE");
    // 60 a minute for the 1 h window (increase() may extrapolate a little at the edges).
    let traffic = canary["traffic"].as_f64().unwrap();
    assert!((3500.0..3700.0).contains(&traffic), "{traffic}");
    let calls = row(canary, "model calls per classification");
    assert!((calls["candidate"]["estimate"].as_f64().unwrap() - 0.5).abs() < 0.01);
    assert!((calls["baseline"]["estimate"].as_f64().unwrap() - 1.0).abs() < 0.01);
    let errors = row(canary, "error share (5xx)");
    assert!((errors["baseline"]["estimate"].as_f64().unwrap() - 0.001).abs() < 0.0002, "scrapes are not counted");
    let p95 = row(canary, "p95 response time");
    assert_eq!((p95["baseline"]["low"].as_f64(), p95["baseline"]["high"].as_f64()), (Some(0.005), Some(0.01)));

    let shadow = experiment(&doc, "shadow");
    assert_eq!(shadow["verdict"], "PROMOTE");
    let agreement = row(shadow, "agreement with serving model")["candidate"].clone();
    assert!((agreement["estimate"].as_f64().unwrap() - 0.97).abs() < 0.002, "{agreement}");
    assert!(agreement["low"].as_f64().unwrap() > 0.95 && agreement["high"].as_f64().unwrap() < 0.99);
    for r in shadow["rows"].as_array().unwrap() {
        assert!(r["status"] == "pass" || r["status"] == "info", "{r}");
    }
}

#[test]
fn canary_with_many_errors_is_rolled_back() {
    let mut s = Scenario::new("bad-canary");
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 60.0, 0.05, 0.5, 0.95, true);
    // A shadow without the comparison metric (a model service from before the shadow compared itself).
    s.model("v1", "app", 330.0, 0.95, V1_INFERENCE);
    s.model("v2", "shadow", 330.0, 0.95, V2_INFERENCE);
    let prom = Prometheus::start(&s);

    let out = prom.verdict("bad-canary", &["--experiment", "canary"]);
    assert_eq!(out.status.code(), Some(2), "exit code 2 = ROLL BACK");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict: ROLL BACK: clearly outside the rule: error share (5xx)"), "{stdout}");

    let doc = json(&prom.verdict("bad-canary", &["--experiment", "canary", "--json"]));
    let errors = row(experiment(&doc, "canary"), "error share (5xx)");
    assert_eq!(errors["status"], "fail");
    let diff = &errors["difference"];
    assert!((diff["estimate"].as_f64().unwrap() - 0.049).abs() < 0.002, "{diff}");
    assert!(diff["low"].as_f64().unwrap() > 0.005, "surely more than 0.5 pp worse: {diff}");

    // The shadow's verdict cannot come without its agreement figure, and says so.
    let out = prom.verdict("bad-canary", &["--experiment", "shadow"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verdict: KEEP RUNNING: not decided yet: agreement with serving model (no data)"),
        "{stdout}"
    );
}

#[test]
fn a_canary_the_gateway_cannot_reach_is_rolled_back() {
    // The canary app died early: it counted a few answers, then nothing; the gateway
    // answered 503 to everyone routed to it. Its own metrics alone read as healthy.
    let mut s = Scenario::new("dead-canary");
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 3.0, 0.0, 0.5, 0.95, true);
    s.gateway("v1", 300.0, 0.3);
    s.gateway("v2", 3.0, 60.0);
    s.model("v1", "app", 300.0, 0.95, V1_INFERENCE);
    let prom = Prometheus::start(&s);

    let doc = json(&prom.verdict("dead-canary", &["--experiment", "canary", "--json"]));
    let errors = row(experiment(&doc, "canary"), "error share (5xx)");
    assert_eq!(errors["status"], "fail", "{errors}");
    let share = errors["candidate"]["estimate"].as_f64().unwrap();
    assert!((share - 60.0 / 63.0).abs() < 0.01, "v2's users got 503 from the gateway: {errors}");
    let out = prom.verdict("dead-canary", &["--experiment", "canary"]);
    assert_eq!(out.status.code(), Some(2), "exit code 2 = ROLL BACK: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn low_traffic_keeps_running_and_says_how_much_more_is_needed() {
    let mut s = Scenario::new("low");
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 3.0, 0.0, 0.5, 0.95, true);
    s.model("v1", "app", 303.0, 0.95, V1_INFERENCE);
    s.model("v2", "shadow", 3.0, 0.95, V2_INFERENCE);
    s.comparisons(3.0, 0.97, CLOSE_GAPS);
    let prom = Prometheus::start(&s);

    let out = prom.verdict("low", &[]);
    assert_eq!(out.status.code(), Some(1), "exit code 1 = KEEP RUNNING");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("verdict: KEEP RUNNING").count(), 2, "{stdout}");
    // 3 a minute for an hour (increase() may land a count or two off at the edges)
    let has: f64 = stdout
        .split("more classifications on app v2 (has ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'needs about N more': {stdout}"));
    assert!((170.0..190.0).contains(&has), "{has}");
    assert!(stdout.contains("more mirrored calls to model v2"), "{stdout}");

    let doc = json(&prom.verdict("low", &["--json"]));
    for name in ["canary", "shadow"] {
        let e = experiment(&doc, name);
        assert_eq!(e["verdict"], "KEEP_RUNNING");
        // at least up to the minimum of 1,000, and more: guess agreement needs it
        let more = e["more_needed"].as_f64().unwrap();
        assert!(more > 1000.0 - 180.0 && more < 100_000.0, "{name}: {more}");
    }
    // The same data with a demo-sized minimum: the figures still decide nothing yet.
    let demo = json(&prom.verdict("low", &["--json", "--min-samples", "100", "--min-duration", "0"]));
    let canary = experiment(&demo, "canary");
    assert_eq!(canary["verdict"], "KEEP_RUNNING");
    assert!(canary["reason"].as_str().unwrap().contains("guess agreement"), "{canary}");
}

#[test]
fn shadow_that_disagrees_reports_it_and_is_not_promoted() {
    let mut s = Scenario::new("disagree");
    s.model("v1", "app", 360.0, 0.95, V1_INFERENCE);
    // Guess agreement only a point lower (within the 2-point margin), but 30 % of the
    // answers differ from the serving model's, and users do not say v2 is the better one.
    s.model("v2", "shadow", 360.0, 0.94, V2_INFERENCE);
    s.comparisons(360.0, 0.70, [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.0]);
    let prom = Prometheus::start(&s);

    let out = prom.verdict("disagree", &["--experiment", "shadow"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("verdict: ROLL BACK: clearly outside the rule: agreement with serving model"), "{stdout}");
    assert!(stdout.contains("70.00 %"), "the agreement figure is printed: {stdout}");

    let doc = json(&prom.verdict("disagree", &["--experiment", "shadow", "--json"]));
    let shadow = experiment(&doc, "shadow");
    let agreement = row(shadow, "agreement with serving model");
    assert_eq!(agreement["status"], "fail");
    assert!((agreement["candidate"]["estimate"].as_f64().unwrap() - 0.70).abs() < 0.002);
    assert_eq!(row(shadow, "guess agreement")["status"], "pass");
    let median_gap =
        row(shadow, "probability gap |p_shadow - p_serving| median")["candidate"]["estimate"].as_f64().unwrap();
    assert!(median_gap > 0.05 && median_gap < 0.2, "{median_gap}");
}

#[test]
fn unreachable_prometheus_is_an_error_not_a_verdict() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_sms-experiment"))
        .args(["--prometheus", &format!("http://127.0.0.1:{port}"), "--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not answer"));
    assert!(out.stdout.is_empty());
}
