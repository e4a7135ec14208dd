//! `sms-experiment serve`, Flagger's gate: the real binary on port 0 of 127.0.0.1 against a
//! real Prometheus holding three canaries, one per namespace (good, bad, too little
//! traffic), called with Flagger-shaped payloads (v1.36's `CanaryWebhookPayload`) by a real
//! HTTP client. Each call prints its status and answer (`-- --nocapture`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The gate's process, stopped by its PID on drop; `url` is the address it printed.
struct Gate {
    child: Child,
    url: String,
}

impl Gate {
    fn start(prometheus: &str, extra: &[&str]) -> Gate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sms-experiment"))
            .args(["serve", "--listen", "127.0.0.1:0", "--prometheus", prometheus, "--window", WINDOW])
            // the scenarios are histories written before the gate starts: judged whole
            .args(["--timeout", "5s", "--whole-window"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the gate printed {first:?}, not its address"))
            .to_owned();
        Gate { child, url }
    }

    /// POSTs `body` to `/webhooks/<hook>`; the status and the answer's text.
    async fn call(&self, hook: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let resp = client()
            .post(format!("{}/webhooks/{hook}", self.url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        println!("POST /webhooks/{hook} -> {status}: {text}");
        (status, text)
    }

    /// The call Flagger makes for `hook` on the canary `sms-app-app` of `namespace`.
    async fn flagger(&self, hook: &str, namespace: &str) -> (u16, String) {
        self.call(hook, flagger_payload(namespace, hook).to_string()).await
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// What Flagger's CallWebhook sends (CallEventWebhook for events: metadata eventMessage,
/// eventType, timestamp, then the webhook's own metadata).
fn flagger_payload(namespace: &str, hook: &str) -> serde_json::Value {
    let metadata = if hook == "event" {
        serde_json::json!({
            "eventMessage": "Advance sms-app-app.good canary weight 20",
            "eventType": "Normal",
            "timestamp": "1765080000000",
        })
    } else {
        serde_json::json!({ "experiment": "canary" })
    };
    serde_json::json!({
        "name": "sms-app-app",
        "namespace": namespace,
        "phase": "Progressing",
        "checksum": "7d9c5b8f6",
        "metadata": metadata,
    })
}

/// One Prometheus with a canary per namespace: `good` (v2: no errors, half the model
/// calls), `bad` (v2: 5 % errors) and `low` (v2: 3 classifications a minute).
fn three_canaries() -> Prometheus {
    let mut s = Scenario::new("good");
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 60.0, 0.0, 0.5, 0.95, true);
    s.namespace = "bad";
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 60.0, 0.05, 0.5, 0.95, true);
    s.namespace = "low";
    s.app("v1", 300.0, 0.001, 1.0, 0.95, false);
    s.app("v2", 3.0, 0.0, 0.5, 0.95, true);
    s.namespace = "gate";
    Prometheus::start(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_answers_each_hook_with_its_namespaces_verdict() {
    let prom = three_canaries();
    let gate = Gate::start(&prom.url(), &[]);

    // A good canary: every check passes, the promotion is confirmed, no rollback.
    let (status, text) = gate.flagger("rollout", "good").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("canary: PROMOTE: every rule holds"), "{text}");
    let (status, text) = gate.flagger("confirm-promotion", "good").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = gate.flagger("rollback", "good").await;
    assert_eq!(status, 412, "no rollback for a good canary: {text}");

    // A bad canary: the check fails (Flagger counts it), the rollback hook fires.
    let (status, text) = gate.flagger("rollout", "bad").await;
    assert_eq!(status, 412, "{text}");
    assert!(text.starts_with("canary: ROLL BACK: clearly outside the rule: error share (5xx)"), "{text}");
    assert!(text.contains("error share (5xx) fail: v1 0.10 %"), "the key figures are in the answer: {text}");
    let (status, text) = gate.flagger("rollback", "bad").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = gate.flagger("confirm-promotion", "bad").await;
    assert_eq!(status, 412, "{text}");

    // Not enough data yet: the analysis goes on, the promotion waits and says why.
    let (status, text) = gate.flagger("rollout", "low").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = gate.flagger("confirm-promotion", "low").await;
    assert_eq!(status, 412, "{text}");
    assert!(text.starts_with("canary: KEEP RUNNING: "), "{text}");
    assert!(text.contains("classifications on app v2") && text.contains("more"), "{text}");
    let (status, _) = gate.flagger("rollback", "low").await;
    assert_eq!(status, 412);

    // A namespace without any data: keep going, never promote.
    let (status, text) = gate.flagger("rollout", "empty").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = gate.flagger("confirm-promotion", "empty").await;
    assert_eq!(status, 412, "{text}");
    assert!(text.contains("no classifications on app v2 in the window yet"), "{text}");

    // The hooks the verdict does not decide: 200, whatever the canary's figures.
    for hook in ["pre-rollout", "post-rollout", "confirm-rollout", "confirm-traffic-increase", "event"] {
        let (status, text) = gate.flagger(hook, "bad").await;
        assert_eq!(status, 200, "{hook}: {text}");
    }

    let health = client().get(format!("{}/healthz", gate.url)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // Flagger calls for many canaries at once: every call gets its own namespace's verdict.
    let calls = (0..24).map(|i| {
        let (namespace, expected) = [("good", 200), ("bad", 412), ("low", 200)][i % 3];
        let gate = &gate;
        async move { (gate.flagger("rollout", namespace).await.0, expected) }
    });
    for (status, expected) in join_all(calls).await {
        assert_eq!(status, expected);
    }
}

/// Runs the futures concurrently (tokio's JoinSet needs 'static futures).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.expect("every future finished")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_never_answers_gets_503_within_the_deadline() {
    // The kernel accepts the connection into the listen queue; nobody ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let gate = Gate::start(&url, &["--timeout", "30s", "--deadline", "2s"]);
    let started = std::time::Instant::now();
    let (status, text) = gate.flagger("rollout", "good").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no verdict within the deadline of 2 s"), "{text}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "{took:?}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_flaggers_are_refused() {
    // No Prometheus is needed to refuse: nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gate = Gate::start(&format!("http://127.0.0.1:{port}"), &["--deadline", "3s"]);

    let (status, text) = gate.call("rollout", "name=sms-app-app&namespace=good").await;
    assert_eq!(status, 400);
    assert!(text.contains("not a Flagger webhook payload"), "{text}");
    let (status, text) = gate.call("rollout", r#"{"name": "sms-app-app"}"#).await;
    assert_eq!(status, 400, "no namespace: {text}");
    assert!(text.contains("namespace"), "{text}");
    let (status, text) = gate.call("rollout", r#"{"name": "app", "namespace": "good\"} or vector(1)"}"#).await;
    assert_eq!(status, 400, "a namespace that would break the PromQL: {text}");
    let (status, text) = gate.call("rollout", r#"{"name": "app", "namespace": "good", "metadata": [1]}"#).await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = gate.flagger("promote-now", "good").await;
    assert_eq!(status, 400);
    assert!(text.contains("unknown webhook type \"promote-now\"") && text.contains("confirm-promotion"), "{text}");

    // 64 KiB and more: refused before the JSON is read.
    let mut big = flagger_payload("good", "event");
    big["metadata"]["padding"] = "x".repeat(64 * 1024).into();
    let (status, text) = gate.call("event", big.to_string()).await;
    assert_eq!(status, 413, "{text}");
    // The same without a Content-Length (chunked): refused while it streams in.
    let (url, body) = (gate.url.clone(), big.to_string());
    let status = tokio::task::spawn_blocking(move || post_chunked(&url, "/webhooks/event", body.as_bytes()));
    assert_eq!(status.await.unwrap(), 413);

    // No verdict (Prometheus is not there): 503 for the hooks it decides, within the deadline.
    for hook in ["rollout", "confirm-promotion", "rollback"] {
        let started = std::time::Instant::now();
        let (status, text) = gate.flagger(hook, "good").await;
        assert_eq!(status, 503, "{hook}: {text}");
        assert!(text.starts_with("no verdict"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
    let (status, _) = gate.flagger("event", "good").await;
    assert_eq!(status, 200, "events need no verdict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_pinned_to_a_namespace_refuses_the_others() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gate = Gate::start(&format!("http://127.0.0.1:{port}"), &["--namespace", "sms-app"]);
    let (status, text) = gate.flagger("rollout", "other").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("namespace sms-app only"), "{text}");
    let (status, _) = gate.flagger("event", "other").await;
    assert_eq!(status, 403);
}

/// POSTs `body` in 8 KiB chunks with no Content-Length (`Transfer-Encoding: chunked`, as
/// a streaming client sends it) over a plain socket; the answer's status.
fn post_chunked(url: &str, path: &str, body: &[u8]) -> u16 {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(8 * 1024) {
        // The server may answer and close before the whole body is sent.
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|()| s.write_all(chunk))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    println!("POST {path} (chunked) -> {}", answer.lines().next().unwrap_or(""));
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}
