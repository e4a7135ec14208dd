//! `make bench`: throughput and latency of the model service under a bounded gRPC load,
//! each design measured in the same run so the comparison is fair on this machine:
//!
//! - baseline: one inference worker (one session, every call waits for it: the
//!   "single locked session" design);
//! - the shipped design: a fixed pool of one session per core;
//! - the v2 char model on the same pool (a heavier graph).
//!
//! The server runs as its own process (as deployed); the load generator keeps
//! `CONCURRENCY` calls in flight for `DURATION`. Prints req/s, p50/p99 and server RSS.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sms_proto::v1::{ClassifyRequest, GetModelInfoRequest, spam_classifier_client::SpamClassifierClient};
use tonic::transport::Channel;

const CONCURRENCY: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const DURATION: Duration = Duration::from_secs(8);

const MESSAGES: &[&str] = &[
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! To claim call 09061701461.",
    "Hey, are we still meeting for lunch tomorrow? Let me know what time works for you.",
    "URGENT! Your mobile number has been awarded a £2000 bonus caller prize. Call 09058095201 now from landline.",
    "Ok lar... Joking wif u oni...",
    "I'll be home late tonight, don't wait up for dinner. Love you",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive entry question",
];

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(version: &str, workers: usize, port: u16) -> Self {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
        let child = Command::new(env!("CARGO_BIN_EXE_model-service"))
            .env("MODEL_ROOT", root)
            .env("MODEL_VERSION", version)
            .env("INFERENCE_WORKERS", workers.to_string())
            .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("MODEL_RELOAD_SECS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start model-service");
        Self { child, addr: format!("http://127.0.0.1:{port}") }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(addr: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint = Channel::from_shared(addr.to_string()).unwrap().timeout(Duration::from_secs(5));
        if let Ok(ch) = endpoint.connect().await {
            let mut c = SpamClassifierClient::new(ch.clone());
            if c.classify(ClassifyRequest { text: MESSAGES[0].into() }).await.is_ok() {
                return ch;
            }
        }
        assert!(Instant::now() < deadline, "model service did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    rss_mib: f64,
}

/// What each call does: classify a message, or only ask for metadata (the gRPC stack
/// without inference, for the transport's own ceiling).
#[derive(Clone, Copy, PartialEq)]
enum Call {
    Classify,
    Metadata,
}

async fn load(channel: Channel, duration: Duration, call: Call) -> (Vec<Duration>, usize) {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let mut client = SpamClassifierClient::new(channel.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut n) = (Vec::new(), 0usize, i);
                while Instant::now() < until {
                    let text = MESSAGES[n % MESSAGES.len()].to_string();
                    n += 1;
                    let started = Instant::now();
                    let ok = match call {
                        Call::Classify => client.classify(ClassifyRequest { text }).await.is_ok(),
                        Call::Metadata => client.get_model_info(GetModelInfoRequest {}).await.is_ok(),
                    };
                    if ok {
                        lat.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    (all, errors)
}

async fn measure(version: &str, workers: usize, port: u16, call: Call) -> Figures {
    let server = Server::start(version, workers, port);
    let channel = connect(&server.addr).await;
    load(channel.clone(), WARMUP, call).await;
    let (mut lat, errors) = load(channel, DURATION, call).await;
    let rss_mib = server.rss_mib();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Figures { rps: lat.len() as f64 / DURATION.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99), errors, rss_mib }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// ONNX Runtime alone, one thread, no gRPC: the per-call cost that bounds the service.
fn inference_cost(version: &str) -> Duration {
    let env = model_service::model::ort_environment(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(std::path::Path::new))
        .expect("ONNX Runtime");
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")).join(version);
    let mut model = model_service::model::Model::load(&env, &dir).expect("model loads");
    let n = 2000;
    let started = Instant::now();
    for i in 0..n {
        model.spam_probability(MESSAGES[i % MESSAGES.len()]).unwrap();
    }
    started.elapsed() / n as u32
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ceiling = Vec::new();
    for version in ["v1", "v2"] {
        let cost = inference_cost(version);
        ceiling.push(cores as f64 / cost.as_secs_f64());
        println!(
            "{version}: ONNX Runtime alone {:.0} us/call -> inference ceiling {:.0} req/s on {cores} cores",
            cost.as_secs_f64() * 1e6,
            cores as f64 / cost.as_secs_f64()
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("model-service gRPC Classify, {CONCURRENCY} calls in flight, {}s per run, {cores} cores", DURATION.as_secs());
    println!("{:<44} {:>9} {:>9} {:>9} {:>7} {:>9}", "design", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB");
    let runs = [
        ("baseline: v1, 1 session (one locked session)", "v1", 1, Call::Classify),
        ("v1 word model, worker pool (1 session/core)", "v1", cores, Call::Classify),
        ("v2 char model, worker pool (1 session/core)", "v2", cores, Call::Classify),
        ("gRPC stack only (GetModelInfo, no inference)", "v1", cores, Call::Metadata),
    ];
    let mut figures = Vec::new();
    for (name, version, workers, call) in runs {
        let f = rt.block_on(measure(version, workers, free_port(), call));
        println!(
            "{name:<44} {:>9.0} {:>9.2} {:>9.2} {:>7} {:>9.1}",
            f.rps, f.p50_ms, f.p99_ms, f.errors, f.rss_mib
        );
        figures.push(f);
    }
    let speedup = figures[1].rps / figures[0].rps;
    println!();
    println!("worker pool vs baseline (same run): x{speedup:.2} throughput, p99 {:.2} ms vs {:.2} ms", figures[1].p99_ms, figures[0].p99_ms);
    println!(
        "share of the inference ceiling (load generator on the same cores): v1 pool {:.2}, v2 pool {:.2}",
        figures[1].rps / ceiling[0],
        figures[2].rps / ceiling[1]
    );
    println!("reference (toolchain.md, Python on this kind of machine, HTTP): Flask+sklearn 333 req/s, FastAPI+onnxruntime 2 workers 2,831 req/s");
    let errors: usize = figures.iter().map(|f| f.errors).sum();
    if errors > 0 {
        eprintln!("bench: {errors} calls failed");
        std::process::exit(1);
    }
}
