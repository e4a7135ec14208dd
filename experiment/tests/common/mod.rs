//! What the experiment's integration tests share: a scenario's metrics as OpenMetrics text,
//! backfilled with `promtool tsdb create-blocks-from openmetrics` and served by a real
//! `prometheus` on a free port of 127.0.0.1 (stopped by its PID when dropped).
// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 70 minutes of samples every 30 s, ending now: the verdict looks at the last hour.
pub const STEP_SECS: u64 = 30;
pub const POINTS: u64 = 141;
pub const WINDOW: &str = "1h";

pub const APP_BUCKETS: [&str; 14] =
    ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
pub const MODEL_BUCKETS: [&str; 14] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "+Inf",
];
pub const GAP_BUCKETS: [&str; 8] = ["0.001", "0.01", "0.05", "0.1", "0.2", "0.5", "1", "+Inf"];

pub fn tool(name: &str) -> String {
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
pub struct Scenario {
    pub namespace: &'static str,
    families: BTreeMap<String, Vec<String>>,
    start: u64,
}

impl Scenario {
    pub fn new(namespace: &'static str) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        Scenario { namespace, families: BTreeMap::new(), start: now - 5 - STEP_SECS * (POINTS - 1) }
    }

    pub fn counter(&mut self, name: &str, labels: &str, per_minute: f64) {
        self.counter_in(self.namespace, name, labels, per_minute);
    }

    /// A counter scraped from a pod of another namespace (the ingress gateway's).
    pub fn counter_in(&mut self, namespace: &str, name: &str, labels: &str, per_minute: f64) {
        let lines = self.families.entry(name.to_owned()).or_default();
        for i in 0..POINTS {
            let value = (per_minute * (i * STEP_SECS) as f64 / 60.0).round();
            let t = self.start + i * STEP_SECS;
            lines.push(format!("{name}{{namespace=\"{namespace}\",{labels}}} {value} {t}"));
        }
    }

    /// The ingress gateway's view of one app version, `ok` and 5xx requests a minute: a stock
    /// Envoy's counts per subset cluster (as `make mesh`'s cluster scrapes them), and another
    /// namespace's app of the same release name that must not be counted.
    pub fn gateway(&mut self, version: &str, ok: f64, failed: f64) {
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
    pub fn histogram(&mut self, name: &str, labels: &str, per_minute: f64, les: &[&str], shares: &[f64]) {
        assert_eq!(les.len(), shares.len());
        for (le, share) in les.iter().zip(shares) {
            self.counter(&format!("{name}_bucket"), &format!("{labels},le=\"{le}\""), per_minute * share);
        }
        self.counter(&format!("{name}_count"), labels, per_minute);
    }

    /// One app version: classifications, model calls, requests (some 5xx), guesses, latency.
    pub fn app(
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
    pub fn model(&mut self, version: &str, source: &str, per_minute: f64, guess_agree: f64, inference: [f64; 14]) {
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
    pub fn comparisons(&mut self, per_minute: f64, agree: f64, gap: [f64; 8]) {
        let l = r#"version="v2",source="shadow",reference_version="v1""#;
        self.counter("sms_shadow_comparisons_total", &format!("{l},outcome=\"agree\""), per_minute * agree);
        self.counter("sms_shadow_comparisons_total", &format!("{l},outcome=\"disagree\""), per_minute * (1.0 - agree));
        self.histogram("sms_shadow_probability_gap", l, per_minute, &GAP_BUCKETS, &gap);
    }

    pub fn openmetrics(&self) -> String {
        let mut text: String = self.families.values().flatten().map(|l| format!("{l}\n")).collect();
        text.push_str("# EOF\n");
        text
    }
}

pub const V1_INFERENCE: [f64; 14] = [0.0, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
pub const V2_INFERENCE: [f64; 14] = [0.0, 0.0, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
pub const CLOSE_GAPS: [f64; 8] = [0.5, 0.8, 0.95, 0.97, 0.99, 1.0, 1.0, 1.0];

/// A Prometheus serving one scenario's backfilled data; stopped by its PID on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(scenario: &Scenario) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn wait_ready(&mut self) {
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
    pub fn verdict(&self, namespace: &str, extra: &[&str]) -> Output {
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

pub fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}
