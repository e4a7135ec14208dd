//! The real `sms-experiment` binary against a real Prometheus loaded with one scenario's
//! metrics: the series are written as OpenMetrics text, backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, and served by `prometheus` on a free
//! port of 127.0.0.1 (stopped by its PID when the test ends). Each scenario prints the
//! verdict it got, so the figures are in the test log (`cargo test -- --nocapture`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 70 minutes of samples every 30 s, ending now: the verdict looks at the last hour.
const STEP_SECS: u64 = 30;
const POINTS: u64 = 141;
const WINDOW: &str = "1h";

const APP_BUCKETS: [&str; 14] =
    ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
const MODEL_BUCKETS: [&str; 14] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "+Inf",
];
const GAP_BUCKETS: [&str; 8] = ["0.001", "0.01", "0.05", "0.1", "0.2", "0.5", "1", "+Inf"];

fn tool(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    let path = found
        .unwrap_or_else(|| panic!("{name} is not installed: scripts/test-rust.sh installs it (apt_ensure prometheus)"));
    path.to_string_lossy().into_owned()
}

/// Counters growing linearly from 0 at the first sample, grouped by name as OpenMetrics wants.
struct Scenario {
    namespace: &'static str,
    families: BTreeMap<String, Vec<String>>,
    start: u64,
}

impl Scenario {
    fn new(namespace: &'static str) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        Scenario { namespace, families: BTreeMap::new(), start: now - 5 - STEP_SECS * (POINTS - 1) }
    }

    fn counter(&mut self, name: &str, labels: &str, per_minute: f64) {
        self.counter_in(self.namespace, name, labels, per_minute);
    }

    /// A counter scraped from a pod of another namespace (the ingress gateway's).
    fn counter_in(&mut self, namespace: &str, name: &str, labels: &str, per_minute: f64) {
        let lines = self.families.entry(name.to_owned()).or_default();
        for i in 0..POINTS {
            let value = (per_minute * (i * STEP_SECS) as f64 / 60.0).round();
            let t = self.start + i * STEP_SECS;
            lines.push(format!("{name}{{namespace=\"{namespace}\",{labels}}} {value} {t}"));
        }
    }

    /// The ingress gateway's view of one app version, `ok` and 5xx requests a minute: plain
    /// Envoy's counts per subset cluster (as `make mesh` scrapes them), and another
    /// namespace's app of the same release name that must not be counted.
    fn gateway(&mut self, version: &str, ok: f64, failed: f64) {
        for (namespace, ok, failed) in [(self.namespace, ok, failed), ("elsewhere", 10.0 * ok, 0.0)] {
            let cluster =
                format!("envoy_cluster_name=\"outbound|8080|{version}|sms-app-app.{namespace}.svc.cluster.local\"");
            for (class, per_minute) in [("2", ok), ("5", failed)] {
                let labels = format!("{cluster},envoy_response_code_class=\"{class}\"");
                self.counter_in("istio-system", "envoy_cluster_upstream_rq_xx", &labels, per_minute);
            }
        }
    }

    /// A histogram of `per_minute` observations; `shares[i]` = share at or under `les[i]`.
    fn histogram(&mut self, name: &str, labels: &str, per_minute: f64, les: &[&str], shares: &[f64]) {
        assert_eq!(les.len(), shares.len());
        for (le, share) in les.iter().zip(shares) {
            self.counter(&format!("{name}_bucket"), &format!("{labels},le=\"{le}\""), per_minute * share);
        }
        self.counter(&format!("{name}_count"), labels, per_minute);
    }

    /// One app version: classifications, model calls, requests (some 5xx), guesses, latency.
    fn app(
        &mut self,
        version: &str,
        per_minute: f64,
        error_share: f64,
        calls_per_classification: f64,
        guess_agree: f64,
        fast: bool,
    ) {
        let v = format!("version=\"{version}\"");
        self.counter("sms_messages_classified_total", &format!("{v},result=\"ham\""), per_minute);
        self.counter("sms_model_calls_total", &format!("{v},outcome=\"ok\""), per_minute * calls_per_classification);
        let route = r#"method="POST",route="/sms/""#;
        let errors = per_minute * error_share / (1.0 - error_share);
        self.counter("sms_requests_total", &format!("{v},{route},status=\"200\""), per_minute);
        self.counter("sms_requests_total", &format!("{v},{route},status=\"503\""), errors);
        // Scrapes are not users' requests: a slow, always-200 /metrics must not count.
        self.counter("sms_requests_total", &format!("{v},method=\"GET\",route=\"/metrics\",status=\"200\""), 4.0);
        self.counter("sms_guesses_total", &format!("{v},agreement=\"agree\""), per_minute * guess_agree);
        self.counter("sms_guesses_total", &format!("{v},agreement=\"disagree\""), per_minute * (1.0 - guess_agree));
        // v1: p95 in (5, 10] ms; the cached v2: more answers under 1 ms, p95 in the same bucket.
        let shares: [f64; 14] = if fast {
            [0.5, 0.7, 0.8, 0.92, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        } else {
            [0.0, 0.1, 0.6, 0.9, 0.98, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        };
        self.histogram(
            "sms_request_latency_seconds",
            &format!("{v},{route}"),
            per_minute + errors,
            &APP_BUCKETS,
            &shares,
        );
    }

    /// One model service (`source` app or shadow): requests, guesses, inference latency.
    fn model(&mut self, version: &str, source: &str, per_minute: f64, guess_agree: f64, inference: [f64; 14]) {
        let vs = format!("version=\"{version}\",source=\"{source}\"");
        self.counter("sms_model_requests_total", &format!("{vs},code=\"Ok\""), per_minute);
        self.counter("sms_model_guesses_total", &format!("{vs},agreement=\"agree\""), per_minute * guess_agree);
        self.counter(
            "sms_model_guesses_total",
            &format!("{vs},agreement=\"disagree\""),
            per_minute * (1.0 - guess_agree),
        );
        self.histogram("sms_model_inference_seconds", &vs, per_minute, &MODEL_BUCKETS, &inference);
    }

    /// The shadow's comparison with the serving model on the same (mirrored) messages.
    fn comparisons(&mut self, per_minute: f64, agree: f64, gap: [f64; 8]) {
        let l = r#"version="v2",source="shadow",reference_version="v1""#;
        self.counter("sms_shadow_comparisons_total", &format!("{l},outcome=\"agree\""), per_minute * agree);
        self.counter("sms_shadow_comparisons_total", &format!("{l},outcome=\"disagree\""), per_minute * (1.0 - agree));
        self.histogram("sms_shadow_probability_gap", l, per_minute, &GAP_BUCKETS, &gap);
    }

    fn openmetrics(&self) -> String {
        let mut text: String = self.families.values().flatten().map(|l| format!("{l}\n")).collect();
        text.push_str("# EOF\n");
        text
    }
}

const V1_INFERENCE: [f64; 14] = [0.0, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const V2_INFERENCE: [f64; 14] = [0.0, 0.0, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const CLOSE_GAPS: [f64; 8] = [0.5, 0.8, 0.95, 0.97, 0.99, 1.0, 1.0, 1.0];

/// A Prometheus serving one scenario's backfilled data; stopped by its PID on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(scenario: &Scenario) -> Self {
        let dir = std::env::temp_dir().join(format!("sms-experiment-{}-{}", std::process::id(), scenario.namespace));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("metrics.om");
        std::fs::write(&data, scenario.openmetrics()).unwrap();
        let out = Command::new(tool("promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&data)
            .arg(dir.join("tsdb"))
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool backfill failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut prom = Prometheus { child, port, dir };
        prom.wait_ready();
        prom
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            if http_get_ok(self.port, "/-/ready") {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the binary on this scenario's namespace; prints what it printed.
    fn verdict(&self, namespace: &str, extra: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_sms-experiment"))
            .args(["--prometheus", &self.url(), "--namespace", namespace, "--window", WINDOW, "--timeout", "10s"])
            .args(extra)
            .output()
            .unwrap();
        println!(
            "$ sms-experiment --namespace {namespace} --window {WINDOW} {}\n{}{}",
            extra.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

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
    // A shadow without the comparison metric (a model service older than issue 15).
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
