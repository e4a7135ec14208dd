//! Hostile callers against the real binary, measured as a process (its RSS): what the
//! in-process tests cannot show.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    SPAM,
    files::{metadata_of, read_card, rewrite_graph, tempdir, wait_for, write_model},
    ort_dylib, repo_models, sample,
};
use sms_proto::v1::{ClassifyRequest, ListDisagreementsRequest, spam_classifier_client::SpamClassifierClient};

/// The chart's memory limit of a model pod (`modelService.resources.limits.memory`).
const CHART_LIMIT_MIB: u64 = 512;

/// The model-service binary on 127.0.0.1 port 0, stopped (by its PID) when dropped.
struct Process {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
}

impl Process {
    fn start(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_model-service"))
            .env("MODEL_ROOT", repo_models())
            .env("MODEL_RELOAD_SECS", "0")
            .env("ORT_DYLIB_PATH", ort_dylib())
            .env("GRPC_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("INFERENCE_HTTP_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn,model_service=info,sms_runtime=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the model-service binary starts");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Reads the ready line, then keeps draining the log so the service never waits on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // `model-service ready: gRPC 127.0.0.1:N, metrics 127.0.0.1:M, ...`
                if let Some(rest) = line.split("ready: gRPC ").nth(1) {
                    let mut parts = rest.split(", ");
                    let grpc = parts.next().unwrap().parse::<SocketAddr>().unwrap();
                    let metrics = parts.next().unwrap().trim_start_matches("metrics ").parse::<SocketAddr>().unwrap();
                    let _ = tx.send((grpc, metrics));
                }
            }
        });
        let (grpc, metrics) = rx.recv_timeout(Duration::from_secs(60)).expect("the model service says it is ready");
        Self { child, grpc, metrics }
    }

    /// (current, peak) resident memory in MiB.
    fn rss_mib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = |key: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        (kib("VmRSS:") / 1024, kib("VmHWM:") / 1024)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 1,000-character text that v2 labels spam and v1 ham (a disagreement).
fn disagreeing_text() -> String {
    let mut text = String::new();
    while text.len() < 1000 {
        text.push_str("Want explicit SEX in 30 secs? Ring 02073162414 now! Costs 20p/min ");
    }
    text.truncate(1000);
    text
}

/// Opens `streams` ListDisagreements calls on one HTTP/2 connection that grants the server
/// no window to answer in, and holds them unread until `hold` resolves.
/// Reports how many were answered (headers) once every one has its answer or its time out.
async fn never_read(
    addr: SocketAddr,
    streams: usize,
    answered_heads: tokio::sync::mpsc::Sender<usize>,
    mut hold: tokio::sync::watch::Receiver<bool>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_window_size(0).handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut body = vec![0u8, 0, 0, 0, 0];
    prost::Message::encode(&ListDisagreementsRequest { limit: 0 }, &mut body).unwrap();
    let mut answered = Vec::new();
    for _ in 0..streams {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}/sms.v1.SpamClassifier/ListDisagreements"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(Bytes::from(body.clone()), true).unwrap();
        answered.push(response);
    }
    let mut heads = 0;
    let mut held = Vec::new();
    for response in answered {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(20), response).await {
            heads += usize::from(r.status() == 200);
            held.push(r); // its body is never read
        }
    }
    answered_heads.send(heads).await.unwrap();
    let _ = hold.wait_for(|done| *done).await;
    drop((held, client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_list_disagreements_answers_stay_within_the_memory_limit() {
    let shadow = Process::start(&[
        ("MODEL_VERSION", "v2"),
        ("METRICS_SOURCE", "shadow"),
        ("REFERENCE_VERSION", "v1"),
        ("DISAGREEMENT_TEXTS", "true"),
        ("DISAGREEMENTS_KEPT", "100"),
    ]);
    let channel = common::channel(shadow.grpc).await;
    let mut client = SpamClassifierClient::new(channel);
    for _ in 0..100 {
        client.classify(ClassifyRequest { text: disagreeing_text() }).await.unwrap();
    }
    let full = client.list_disagreements(ListDisagreementsRequest { limit: 0 }).await.unwrap().into_inner();
    assert_eq!(full.disagreements.len(), 100, "every kept disagreement is answered: seen {}", full.seen);
    assert!(full.disagreements.iter().all(|d| d.text.len() == 1000));
    let before = shadow.rss_mib();

    // 120 connections x 32 streams, each answered and never read.
    let (done, hold) = tokio::sync::watch::channel(false);
    let (heads_tx, mut heads_rx) = tokio::sync::mpsc::channel(120);
    let flood: Vec<_> =
        (0..120).map(|_| tokio::spawn(never_read(shadow.grpc, 32, heads_tx.clone(), hold.clone()))).collect();
    let mut heads = 0;
    for _ in 0..120 {
        heads += tokio::time::timeout(Duration::from_secs(60), heads_rx.recv()).await.unwrap().unwrap();
    }
    let during = shadow.rss_mib();
    // A normal client still gets its whole answer meanwhile.
    let asked = Instant::now();
    let normal =
        tokio::time::timeout(Duration::from_secs(5), client.list_disagreements(ListDisagreementsRequest { limit: 0 }))
            .await
            .expect("a normal client is answered while the flood holds its streams")
            .unwrap()
            .into_inner();
    let normal_ms = asked.elapsed().as_millis();
    let after_normal = shadow.rss_mib();
    done.send(true).unwrap();
    for f in flood {
        f.await.unwrap();
    }
    println!(
        "RSS before {} MiB; with {heads} unread answers {} MiB (peak {} MiB); normal answer ({} entries) in {normal_ms} ms; peak after {} MiB",
        before.0,
        during.0,
        during.1,
        normal.disagreements.len(),
        after_normal.1
    );
    assert_eq!(normal.disagreements.len(), 100);
    assert!(heads >= 3800, "the flood's calls were answered (headers): {heads} of 3840");
    assert!(after_normal.1 < CHART_LIMIT_MIB / 2, "peak RSS {} MiB: unread answers are not bounded", after_normal.1);
}

/// v1's graph padded with an unused initializer to about `mib` MiB, as training would export
/// it (same metadata), so only its size differs.
fn big_v1_graph(mib: usize) -> Vec<u8> {
    let v1 = std::fs::read(repo_models().join("v1/model.onnx")).unwrap();
    let metadata = metadata_of("v1", "0.5");
    let metadata: Vec<_> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    rewrite_graph(&v1, &metadata, mib * 1024 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_the_memory_budget_is_refused_before_it_is_read() {
    let root = tempdir("budget");
    common::files::copy_model(&repo_models().join("v1"), &root.join("v1"));
    let card = read_card(&root.join("v1"));
    let root_text = root.to_str().unwrap();
    let model = Process::start(&[
        ("MODEL_ROOT", root_text),
        ("MODEL_RELOAD_SECS", "1"),
        ("INFERENCE_WORKERS", "1"),
        ("MEMORY_LIMIT_MIB", "256"),
    ]);
    let mut client = SpamClassifierClient::new(common::channel(model.grpc).await);
    let count = |outcome: &'static str| {
        let addr = model.metrics;
        async move { sample(&common::http_get(addr, "/metrics").await, "sms_model_reloads_total", &[("outcome", outcome)]) }
    };
    let before = model.rss_mib();

    // 40 MiB: within the budget, loaded (the old model stays until the new one is in).
    write_model(&root.join("v1"), &big_v1_graph(40), card.clone());
    wait_for(|| async { count("success").await == Some(1.0) }).await;
    let loaded = model.rss_mib();
    client.classify(ClassifyRequest { text: SPAM.into() }).await.unwrap();

    // 300 MiB: past the budget of 256 MiB; refused before a byte is read, still serving.
    write_model(&root.join("v1"), &big_v1_graph(300), card.clone());
    wait_for(|| async { count("failure").await == Some(1.0) }).await;
    let refused = model.rss_mib();
    let answer = client.classify(ClassifyRequest { text: SPAM.into() }).await.unwrap().into_inner();
    println!(
        "RSS at start {} MiB; a 40 MiB graph loaded: {} MiB (peak {} MiB, {:.2} x its size added at the peak); \
         a 300 MiB graph refused: peak {} MiB (limit 256 MiB)",
        before.0,
        loaded.0,
        loaded.1,
        (loaded.1 - before.1) as f64 / 40.0,
        refused.1
    );
    assert_eq!(answer.label, "spam");
    assert!(loaded.1 < 256 * 9 / 10, "the 40 MiB load stayed within 90 % of the limit: peak {} MiB", loaded.1);
    assert_eq!(refused.1, loaded.1, "the refused graph was never read: the peak did not move");
    std::fs::remove_dir_all(root).unwrap();
}
