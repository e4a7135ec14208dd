//! Overload gets a fast, clear refusal: calls beyond what the workers and their bounded
//! queue hold are answered RESOURCE_EXHAUSTED at once (and counted), never queued without
//! bound; every other call is answered normally. An Open Inference Protocol batch holds a
//! queue place per row.

mod common;

use std::time::{Duration, Instant};

use common::{
    SPAM, TestModel,
    oip::{oip_client, outputs, texts, typed},
    sample, test_config,
};
use sms_proto::v1::ClassifyRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_queue_are_refused_with_resource_exhausted() {
    let mut config = test_config("v2");
    config.workers = 1;
    config.queue_per_worker = 2;
    let m = TestModel::start(config).await;
    // One call first, so the client has the server's SETTINGS (32 streams a connection):
    // streams opened before they arrive are refused by the protocol (REFUSED_STREAM, which
    // tonic reports as UNAVAILABLE), whatever the queue does.
    m.client.clone().classify(ClassifyRequest { text: SPAM.into() }).await.expect("the first call is answered");
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let mut client = m.client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let code = match client.classify(ClassifyRequest { text: SPAM.into() }).await {
                    Ok(_) => Code::Ok,
                    Err(s) => s.code(),
                };
                (code, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == Code::ResourceExhausted).collect();
    let ok = answers.iter().filter(|a| a.0 == Code::Ok).count();
    println!(
        "64 at once, 1 worker, queue 2: {ok} answered, {} refused (slowest refusal {:?})",
        refused.len(),
        refused.iter().map(|a| a.1).max()
    );
    assert_eq!(ok + refused.len(), 64, "only Ok or RESOURCE_EXHAUSTED: {answers:?}");
    assert!(!refused.is_empty() && ok >= 3, "{answers:?}");
    assert!(refused.iter().all(|a| a.1 < Duration::from_secs(1)), "refusals must be fast: {answers:?}");
    let metrics = m.metrics().await;
    assert_eq!(
        sample(&metrics, "sms_model_requests_total", &[("code", "ResourceExhausted")]),
        Some(refused.len() as f64)
    );
    assert_eq!(sample(&metrics, "sms_model_requests_total", &[("code", "Ok")]), Some(ok as f64 + 1.0));
    m.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holds_queue_places_per_row_and_cannot_jump_the_bound() {
    let mut config = test_config("v2");
    config.workers = 1;
    config.queue_per_worker = 16;
    let m = TestModel::start(config).await;
    let mut oip = oip_client(&m).await;
    // The bound in force is the queue's 16 rows, said in the refusal.
    let err = oip.model_infer(typed(&texts(17))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 16 rows"), "{}", err.message());
    oip.model_infer(typed(&texts(16))).await.expect("a batch the size of the queue is answered");
    // Many full batches at once: each holds 16 places, so most are refused whole, at once.
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let mut oip = oip.clone();
            tokio::spawn(
                async move { oip.model_infer(typed(&texts(16))).await.map(|r| outputs(&r.into_inner()).0.len()) },
            )
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(16) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    println!("24 batches of 16 at once, 1 worker, 16 places: {ok} answered, {refused} refused");
    assert!(ok >= 1 && refused >= 1, "{ok} answered, {refused} refused");
    // Over HTTP the same refusal is a 503 with Retry-After and the protocol's error body.
    let body = serde_json::json!({"inputs": [{"name": "text", "shape": [16], "datatype": "BYTES", "data": texts(16)}]})
        .to_string();
    let addr = m.server.inference_http_addr;
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /v2/models/sms-spam/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await.unwrap();
                stream.write_all(body.as_bytes()).await.unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.unwrap();
                answer
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        let answer = c.await.unwrap();
        if answer.starts_with("HTTP/1.1 200") {
            ok += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
            assert!(answer.contains(r#"{"error":"the model service is overloaded; retry in a moment"}"#), "{answer}");
            refused += 1;
        }
    }
    println!("24 HTTP batches of 16 at once: {ok} answered, {refused} refused with 503");
    assert!(ok >= 1 && refused >= 1, "{ok} answered, {refused} refused");
    // A single call still goes through afterwards.
    oip.model_infer(typed(&[SPAM])).await.unwrap();
    m.server.stop().await.unwrap();
}
