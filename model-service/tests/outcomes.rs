//! Every Classify call is answered with the right gRPC code and counted under it in
//! `sms_model_requests_total`: server timeouts are DEADLINE_EXCEEDED, frames that do not
//! decode or claim compression nobody negotiated are INVALID_ARGUMENT, and calls the
//! client gave up on are Cancelled; the counts add up to the calls made.

mod common;

use std::{process::Command, time::Duration};

use common::{SPAM, TestModel, sample, test_config};
use sms_proto::v1::{ClassifyRequest, spam_classifier_client::SpamClassifierClient};
use tonic::Code;

fn count(metrics: &str, code: &str) -> f64 {
    sample(metrics, "sms_model_requests_total", &[("code", code)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_server_deadline_get_deadline_exceeded_and_are_counted() {
    let mut config = test_config("v2");
    config.workers = 1;
    config.queue_per_worker = 2000;
    // Calls queue behind ~60 us of inference each: past the first few dozen, late.
    config.request_timeout = Duration::from_millis(2);
    let m = TestModel::start(config).await;
    // 1,000 calls at once (~60 ms of work for one worker) over 32 connections (one carries
    // 32 calls at a time).
    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(SpamClassifierClient::new(common::channel(m.server.grpc_addr).await));
    }
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                match client.classify(ClassifyRequest { text: SPAM.into() }).await {
                    Ok(_) => Code::Ok,
                    Err(s) => {
                        assert!(s.code() != Code::DeadlineExceeded || s.message().contains("within 2 ms"), "{s:?}");
                        s.code()
                    }
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for c in calls {
        codes.push(c.await.unwrap());
    }
    let late = codes.iter().filter(|c| **c == Code::DeadlineExceeded).count();
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    println!("1000 calls, 1 worker, 2 ms deadline: {ok} answered, {late} DEADLINE_EXCEEDED");
    assert_eq!(ok + late, 1000, "only Ok or DEADLINE_EXCEEDED: {codes:?}");
    assert!(late > 0 && ok > 0, "{codes:?}");
    let metrics = m.metrics().await;
    assert_eq!((count(&metrics, "Ok"), count(&metrics, "DeadlineExceeded")), (ok as f64, late as f64));
    assert_eq!(count(&metrics, "Cancelled"), 0.0);
    m.server.stop().await.unwrap();
}

/// One HTTP/2 gRPC call with a hand-made frame, through curl (no gRPC client would send it).
fn curl_grpc(addr: std::net::SocketAddr, frame: &[u8]) -> String {
    let body = std::env::temp_dir().join(format!("grpc-frame-{}", std::process::id()));
    std::fs::write(&body, frame).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--max-time", "10", "--http2-prior-knowledge"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{addr}/sms.v1.SpamClassifier/Classify"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

#[tokio::test]
async fn frames_that_do_not_decode_are_invalid_argument_and_counted() {
    let m = TestModel::version("v1").await;
    let addr = m.server.grpc_addr;
    let message = [0x0a, 0x02, b'h', b'i'];
    let frame = |flag: u8, payload: &[u8]| {
        let mut f = vec![flag];
        f.extend((payload.len() as u32).to_be_bytes());
        f.extend(payload);
        f
    };
    let answers = tokio::task::spawn_blocking(move || {
        [
            curl_grpc(addr, &frame(0, &message)),                  // fine
            curl_grpc(addr, &frame(1, &message)),                  // "compressed", no grpc-encoding
            curl_grpc(addr, &frame(0, &[0x0a, 0x02, 0xff, 0xfe])), // text not UTF-8
            curl_grpc(addr, &frame(0, &[0x0a, 0x10, b'h'])),       // truncated field
        ]
    })
    .await
    .unwrap();
    for (answer, want) in answers.iter().zip(["grpc-status: 0", "grpc-status: 3", "grpc-status: 3", "grpc-status: 3"]) {
        assert!(answer.contains(want), "want {want}, got:\n{answer}");
    }
    let metrics = m.metrics().await;
    assert_eq!((count(&metrics, "Ok"), count(&metrics, "InvalidArgument")), (1.0, 3.0), "{metrics}");
    assert_eq!(count(&metrics, "Internal"), 0.0);
    m.server.stop().await.unwrap();
}
