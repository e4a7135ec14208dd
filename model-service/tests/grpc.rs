//! The model service over real gRPC on loopback: classification, metadata, health,
//! bad input, concurrency, hot reload, start-up failures and graceful shutdown.

mod common;

use std::time::Duration;

use common::{
    HAM, SPAM, TestModel,
    files::{copy_model, metadata_of, read_card, reloading_copy_of_v1, rewrite_graph, tempdir, wait_for, write_model},
    sample, test_config,
};
use sms_proto::{
    MAX_TEXT_CHARS,
    v1::{ClassifyRequest, GetModelInfoRequest},
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn req(text: &str) -> ClassifyRequest {
    ClassifyRequest { text: text.into() }
}

#[tokio::test]
async fn both_models_tell_spam_from_ham() {
    for version in ["v1", "v2"] {
        let mut m = TestModel::version(version).await;
        let spam = m.client.classify(req(SPAM)).await.unwrap().into_inner();
        assert_eq!(spam.label, "spam", "{version}");
        assert!(spam.spam_probability > 0.5, "{version}: {spam:?}");
        assert_eq!(spam.model_version, version);
        assert_eq!(spam.model_name, format!("sms-spam-{version}"));
        let ham = m.client.classify(req(HAM)).await.unwrap().into_inner();
        assert_eq!(ham.label, "ham", "{version}");
        assert!(ham.spam_probability < 0.5, "{version}: {ham:?}");
        m.server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn whitespace_is_normalized_like_training() {
    let mut m = TestModel::version("v2").await;
    let plain = m.client.classify(req("Free entry to win a prize")).await.unwrap().into_inner();
    let spaced = m.client.classify(req("  Free\t\tentry  to\n\nwin a   prize ")).await.unwrap().into_inner();
    assert_eq!(plain.spam_probability, spaced.spam_probability);
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn model_info_comes_from_the_model_card() {
    let mut m = TestModel::version("v1").await;
    let info = m.client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "sms-spam-v1");
    assert_eq!(info.version, "v1");
    assert_eq!(info.classes, ["ham", "spam"]);
    assert_eq!(info.threshold, 0.5);
    assert_eq!(info.data_sha256.len(), 64);
    assert!(info.metrics["spam_f1"] > 0.85, "{:?}", info.metrics);
    assert_eq!(info.source, "app");
    assert_eq!(info.max_text_chars as usize, MAX_TEXT_CHARS);
    assert!(info.loaded_at_unix > 1_700_000_000);
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn health_reports_serving_once_loaded() {
    let m = TestModel::version("v1").await;
    let mut health = HealthClient::new(common::channel(m.server.grpc_addr).await);
    for service in ["", "sms.v1.SpamClassifier"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "service {service:?}");
    }
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_with_a_reason() {
    let mut m = TestModel::version("v1").await;
    let too_long = "a".repeat(MAX_TEXT_CHARS + 1);
    let cases = [("", "empty"), (" \t\n ", "empty"), (too_long.as_str(), "limit is 1000"), ("nul\0byte", "NUL")];
    for (text, why) in cases {
        let err = m.client.classify(req(text)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
        assert!(err.message().contains(why), "{why}: {}", err.message());
    }
    // Exactly at the limit (after trimming) is fine.
    let at_limit = format!("  {}  ", "word ".repeat(MAX_TEXT_CHARS / 5).trim_end());
    m.client.classify(req(&at_limit)).await.unwrap();
    // Multi-byte characters count as characters, not bytes.
    m.client.classify(req(&"é".repeat(MAX_TEXT_CHARS))).await.unwrap();

    // A message larger than the server's decoding limit is refused before decoding.
    let huge = "x".repeat(64 * 1024);
    let err = m.client.classify(req(&huge)).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");

    // The refusals are counted, and the service still works.
    let text = m.metrics().await;
    assert_eq!(sample(&text, "sms_model_requests_total", &[("code", "InvalidArgument")]), Some(4.0));
    assert_eq!(m.client.classify(req(SPAM)).await.unwrap().into_inner().label, "spam");
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_predictions_with_version_and_source() {
    let mut config = test_config("v2");
    config.source = "shadow".into();
    let mut m = TestModel::start(config).await;
    for _ in 0..3 {
        m.client.classify(req(SPAM)).await.unwrap();
    }
    m.client.classify(req(HAM)).await.unwrap();
    let text = m.metrics().await;
    let labels = |result| [("version", "v2"), ("source", "shadow"), ("result", result), ("protocol", "sms")];
    assert_eq!(sample(&text, "sms_model_predictions_total", &labels("spam")), Some(3.0));
    assert_eq!(sample(&text, "sms_model_predictions_total", &labels("ham")), Some(1.0));
    assert_eq!(
        sample(&text, "sms_model_inference_seconds_count", &[("source", "shadow"), ("protocol", "sms")]),
        Some(4.0)
    );
    assert_eq!(sample(&text, "sms_model_inflight_requests", &[("version", "v2")]), Some(0.0));
    assert_eq!(sample(&text, "sms_model_info", &[("model_name", "sms-spam-v2")]), Some(1.0));
    // Sub-millisecond buckets exist for a sub-millisecond model.
    assert!(text.contains(
        "sms_model_inference_seconds_bucket{protocol=\"sms\",source=\"shadow\",version=\"v2\",le=\"0.00025\"}"
    ));
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_calls_all_succeed_on_the_worker_pool() {
    let m = TestModel::version("v1").await;
    assert_eq!(m.server.inference_threads, 2, "test_config's workers");
    let calls = (0..200).map(|i| {
        let mut client = m.client.clone();
        tokio::spawn(async move {
            let text = if i % 2 == 0 { SPAM } else { HAM };
            client.classify(req(text)).await.map(|r| (i, r.into_inner().label))
        })
    });
    for call in futures_join(calls).await {
        let (i, label) = call.unwrap();
        assert_eq!(label, if i % 2 == 0 { "spam" } else { "ham" });
    }
    // Every call ran as one job, and the work was spread: each worker served some.
    let jobs = m.server.inference_load.jobs();
    println!("200 calls on 2 workers: jobs per worker {jobs:?}");
    assert_eq!(jobs.iter().sum::<u64>(), 200, "{jobs:?}");
    assert!(jobs.len() == 2 && jobs.iter().all(|&n| n > 0), "every worker served calls: {jobs:?}");
    m.server.stop().await.unwrap();
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn new_model_files_are_picked_up_and_bad_ones_rejected() {
    let (root, config) = reloading_copy_of_v1("reload");
    let mut m = TestModel::start(config).await;
    let info = || GetModelInfoRequest {};
    assert_eq!(m.client.get_model_info(info()).await.unwrap().into_inner().name, "sms-spam-v1");
    // The reload counters exist from the start, so increase() sees the first failure.
    let first = m.metrics().await;
    for outcome in ["success", "failure"] {
        assert_eq!(sample(&first, "sms_model_reloads_total", &[("outcome", outcome)]), Some(0.0), "{outcome}");
    }

    // New files for the same version (here v2's graph, exported as v1 would be): loaded,
    // warmed and swapped in.
    let before = m.client.classify(req(SPAM)).await.unwrap().into_inner();
    let v2_graph = std::fs::read(common::repo_models().join("v2/model.onnx")).unwrap();
    let metadata = metadata_of("v1", "0.5");
    let metadata: Vec<_> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut card = read_card(&root.join("v1"));
    card["description"] = "retrained".into();
    write_model(&root.join("v1"), &rewrite_graph(&v2_graph, &metadata, 0), card);
    wait_for(|| async {
        m.client.clone().get_model_info(info()).await.unwrap().into_inner().description == "retrained"
    })
    .await;
    let answer = m.client.classify(req(SPAM)).await.unwrap().into_inner();
    assert_eq!((answer.model_name.as_str(), answer.model_version.as_str()), ("sms-spam-v1", "v1"));
    assert_ne!(answer.spam_probability, before.spam_probability, "the new graph answers");
    // sms_model_info names only the model being served, not the one swapped out.
    let info_series: Vec<String> =
        m.metrics().await.lines().filter(|l| l.starts_with("sms_model_info{")).map(str::to_string).collect();
    assert_eq!(info_series.len(), 1, "{info_series:?}");
    assert!(info_series[0].contains(r#"model_name="sms-spam-v1""#), "{info_series:?}");

    // A corrupt model is refused; the previous one keeps serving.
    std::fs::write(root.join("v1/model.onnx"), b"not an onnx file").unwrap();
    let metrics_has_failure =
        || async { sample(&m.metrics().await, "sms_model_reloads_total", &[("outcome", "failure")]) == Some(1.0) };
    wait_for(metrics_has_failure).await;
    let still = m.client.classify(req(SPAM)).await.unwrap().into_inner();
    assert_eq!((still.label.as_str(), still.spam_probability), ("spam", answer.spam_probability));
    assert_eq!(sample(&m.metrics().await, "sms_model_reloads_total", &[("outcome", "success")]), Some(1.0));
    m.server.stop().await.unwrap();
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn missing_or_corrupt_model_stops_start_up_with_a_clear_error() {
    let mut config = test_config("v9");
    let err = model_service::start(config.clone()).await.err().expect("must fail").to_string();
    assert!(err.contains("v9") && err.contains("model.json"), "{err}");

    let root = tempdir("corrupt");
    copy_model(&common::repo_models().join("v1"), &root.join("v1"));
    // Garbage that its card even names: ONNX Runtime itself must refuse it.
    std::fs::write(root.join("v1/model.onnx"), b"garbage").unwrap();
    let card = std::fs::read_to_string(root.join("v1/model.json")).unwrap();
    let mut card: serde_json::Value = serde_json::from_str(&card).unwrap();
    use sha2::Digest;
    card["onnx_sha256"] =
        sha2::Sha256::digest(b"garbage").iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    std::fs::write(root.join("v1/model.json"), card.to_string()).unwrap();
    config.model_root = root.clone();
    config.model_version = "v1".into();
    let err = format!("{:#}", model_service::start(config).await.err().expect("must fail"));
    assert!(err.contains("model.onnx") && err.contains("cannot be loaded"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn shutdown_answers_every_accepted_call() {
    let m = TestModel::version("v2").await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut client = m.client.clone();
            tokio::spawn(async move { client.classify(req(SPAM)).await })
        })
        .collect();
    // Let the calls reach the server, then stop it while they are in flight.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stop = tokio::spawn(m.server.stop());
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            // Calls that had not reached the server when it stopped listening are refused
            // cleanly (never dropped half-way): UNAVAILABLE, CANCELLED, or a stream beyond
            // the last one the server's GOAWAY (NO_ERROR) said it would process, which h2
            // never handed to the server and tonic reports as INTERNAL with that GOAWAY as
            // its source (the app treats any status made by the transport as a 503).
            Err(status) => assert!(
                matches!(status.code(), Code::Unavailable | Code::Cancelled) || refused_by_goaway(&status),
                "{status:?}"
            ),
        }
    }
    assert!(ok > 0);
    stop.await.unwrap().unwrap();
}

/// Whether the transport failed the call because the server's graceful GOAWAY left its
/// stream out (h2's error, kept as the status's source, says GoAway with NO_ERROR).
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let source = std::error::Error::source(status).map(|e| format!("{e:?}")).unwrap_or_default();
    source.contains("GoAway") && source.contains("NO_ERROR")
}

/// Raw bytes on the wire, to send what no well-behaved client would.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::{
        Status,
        codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    };

    #[derive(Default)]
    pub struct RawCodec;
    pub struct Raw;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
}

#[tokio::test]
async fn undecodable_requests_get_invalid_argument() {
    let m = TestModel::version("v1").await;
    let mut grpc = tonic::client::Grpc::new(common::channel(m.server.grpc_addr).await);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sms.v1.SpamClassifier/Classify");
    // Field 1 (`text`), 2 bytes, not UTF-8; then a truncated field.
    for bytes in [vec![0x0a, 0x02, 0xff, 0xfe], vec![0x0a, 0x10, b'h', b'i']] {
        grpc.ready().await.unwrap();
        let err = grpc.unary(tonic::Request::new(bytes.clone()), path.clone(), raw::RawCodec).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bytes:?}: {err:?}");
        assert!(err.message().contains("not a valid sms.v1 message"), "{}", err.message());
    }
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn calls_cancelled_by_their_deadline_leave_no_request_in_flight() {
    let m = TestModel::version("v2").await;
    // Far more calls than two workers finish in 20 ms: the later ones reach the server and
    // wait in its queue until their deadline drops them there.
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let mut client = m.client.clone();
            tokio::spawn(async move {
                let mut r = tonic::Request::new(req(SPAM));
                r.set_timeout(Duration::from_millis(20));
                client.classify(r).await
            })
        })
        .collect();
    let mut cancelled = 0;
    for call in calls {
        if call.await.unwrap().is_err() {
            cancelled += 1;
        }
    }
    assert!(cancelled > 0, "no call hit its deadline");
    wait_for(|| async { sample(&m.metrics().await, "sms_model_inflight_requests", &[("version", "v2")]) == Some(0.0) })
        .await;
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_graph_its_card_does_not_describe_is_refused_at_start_and_on_reload() {
    let (root, config) = reloading_copy_of_v1("mismatch");
    let mut m = TestModel::start(config.clone()).await;
    let before = m.client.classify(req(SPAM)).await.unwrap().into_inner();

    // Only model.onnx replaced (v2's graph), v1's card left: refused and counted, and the
    // v1 graph keeps answering under its own name.
    std::fs::copy(common::repo_models().join("v2/model.onnx"), root.join("v1/model.onnx")).unwrap();
    let failed =
        || async { sample(&m.metrics().await, "sms_model_reloads_total", &[("outcome", "failure")]) == Some(1.0) };
    wait_for(failed).await;
    let after = m.client.classify(req(SPAM)).await.unwrap().into_inner();
    assert_eq!((after.model_name.as_str(), after.spam_probability), ("sms-spam-v1", before.spam_probability));
    let info = m.metrics().await;
    assert_eq!(sample(&info, "sms_model_info", &[("model_name", "sms-spam-v1")]), Some(1.0));
    m.server.stop().await.unwrap();

    // The same folder at start-up: one clear line, nothing served.
    let err = format!("{:#}", model_service::start(config).await.err().expect("must refuse"));
    assert!(err.contains("sha256") && err.contains("replace both files together"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}
