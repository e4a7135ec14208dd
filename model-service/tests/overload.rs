//! Overload gets a fast, clear refusal: calls beyond what the workers and their bounded
//! queue hold are answered RESOURCE_EXHAUSTED at once (and counted), never queued without
//! bound; every other call is answered normally.

mod common;

use std::time::{Duration, Instant};

use common::{SPAM, TestModel, sample, test_config};
use sms_proto::v1::ClassifyRequest;
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
