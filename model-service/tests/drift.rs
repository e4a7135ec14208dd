//! The drift metrics on a real server: every protocol (sms.v1 Classify, the Open Inference
//! Protocol over gRPC and HTTP) and the shadow's mirrored calls feed the same histograms of
//! spam probability and input length, labelled as the prediction counter is; the served
//! card's reference is exported in the histograms' own `le` spelling; a card without a
//! usable reference is served without one.

mod common;

use std::collections::BTreeSet;

use common::{
    HAM, SPAM, TestModel,
    files::{copy_model, read_card, tempdir, write_model},
    sample, test_config,
};
use sms_proto::{
    inference::{
        InferTensorContents, ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    },
    v1::ClassifyRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OIP_ROWS: [&str; 3] = ["Free entry to win a prize, txt WIN to 80086", "  see you\tat lunch?  ", "ok"];
const REST_ROWS: [&str; 2] = [SPAM, "Ok... Ur typical reply..."];

fn infer_request(rows: &[&str]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "sms-spam".into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![rows.len() as i64],
            contents: Some(Box::new(InferTensorContents {
                bytes_contents: rows.iter().map(|r| r.as_bytes().to_vec()).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn post_infer(m: &TestModel, rows: &[&str]) {
    let body =
        serde_json::json!({"inputs": [{"name": "text", "shape": [rows.len()], "datatype": "BYTES", "data": rows}]})
            .to_string();
    let addr = m.server.inference_http_addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v2/models/sms-spam/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Characters the model sees (whitespace normalized, as the service validates).
fn chars(rows: &[&str]) -> f64 {
    rows.iter().map(|r| sms_proto::normalize_text(r).chars().count() as f64).sum()
}

/// The values of label `key` on `name`'s samples on the page that carry `labels`.
fn values_of(page: &str, name: &str, key: &str, labels: &[(&str, &str)]) -> BTreeSet<String> {
    page.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{")) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.split(&format!("{key}=\"")).nth(1)?.split('"').next().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn every_protocol_and_the_shadow_feed_the_histograms_and_the_reference_is_exported() {
    let mut config = test_config("v2");
    config.source = "shadow".into();
    config.reference_version = Some("v1".into());
    let m = TestModel::start(config).await;
    let classified = m.client.clone().classify(ClassifyRequest { text: SPAM.into() }).await.unwrap().into_inner();
    m.client.clone().classify(ClassifyRequest { text: HAM.into() }).await.unwrap();
    let mut oip = GrpcInferenceServiceClient::new(common::channel(m.server.grpc_addr).await);
    oip.model_infer(infer_request(&OIP_ROWS)).await.unwrap();
    post_infer(&m, &REST_ROWS).await;
    let page = m.metrics().await;

    for (protocol, rows) in
        [("sms", vec![SPAM, HAM]), ("oip-grpc", OIP_ROWS.to_vec()), ("oip-rest", REST_ROWS.to_vec())]
    {
        let labels = [("version", "v2"), ("source", "shadow"), ("protocol", protocol)];
        let predicted: f64 = ["spam", "ham"]
            .iter()
            .map(|r| {
                let mut with_result = labels.to_vec();
                with_result.push(("result", r));
                sample(&page, "sms_model_predictions_total", &with_result).unwrap()
            })
            .sum();
        assert_eq!(predicted, rows.len() as f64, "{protocol}");
        assert_eq!(sample(&page, "sms_model_spam_probability_count", &labels), Some(predicted), "{protocol}: {page}");
        assert_eq!(sample(&page, "sms_model_input_chars_count", &labels), Some(predicted), "{protocol}");
        assert_eq!(sample(&page, "sms_model_input_chars_sum", &labels), Some(chars(&rows)), "{protocol}");
    }
    // The Classify answer's probability is in the bucket that counts it: (0.9, 1] for the
    // spam message, so the bucket below counts only the ham one.
    assert!(classified.spam_probability > 0.9, "{}", classified.spam_probability);
    let sms = [("protocol", "sms"), ("source", "shadow")];
    let bucket = |le| sample(&page, "sms_model_spam_probability_bucket", &[sms[0], sms[1], ("le", le)]);
    assert_eq!((bucket("0.9"), bucket("1")), (Some(1.0), Some(2.0)), "{page}");

    // The reference: the card's shares, its `bucket` labels exactly the `le` values of the
    // live buckets.
    let card = read_card(&common::repo_models().join("v2"));
    for (quantity, histogram) in
        [("spam_probability", "sms_model_spam_probability_bucket"), ("input_chars", "sms_model_input_chars_bucket")]
    {
        let reference = [("version", "v2"), ("source", "shadow"), ("quantity", quantity)];
        let mut live = values_of(&page, histogram, "le", &sms);
        assert!(live.remove("+Inf"));
        assert_eq!(values_of(&page, "sms_model_reference_share", "bucket", &reference), live, "{quantity}");
        let shares = &card["reference"][quantity];
        for (le, share) in shares["le"].as_array().unwrap().iter().zip(shares["share"].as_array().unwrap()) {
            let le = le.as_f64().unwrap().to_string();
            let mut labels = reference.to_vec();
            labels.push(("bucket", &le));
            assert_eq!(sample(&page, "sms_model_reference_share", &labels), share.as_f64(), "{quantity} {le}");
        }
    }
    assert_eq!(
        sample(&page, "sms_model_reference_spam_share", &[("version", "v2"), ("source", "shadow")]),
        card["reference"]["predicted_spam_share"].as_f64()
    );
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_card_without_a_usable_reference_is_served_without_one() {
    let graph = std::fs::read(common::repo_models().join("v1").join("model.onnx")).unwrap();
    let card = read_card(&common::repo_models().join("v1"));
    let mut other_buckets = card.clone();
    other_buckets["reference"]["spam_probability"]["le"][0] = 0.05.into();
    let mut without = card.clone();
    without.as_object_mut().unwrap().remove("reference");
    for (name, edited) in [("drift-other-buckets", other_buckets), ("drift-no-reference", without)] {
        let root = tempdir(name);
        copy_model(&common::repo_models().join("v1"), &root.join("v1"));
        write_model(&root.join("v1"), &graph, edited);
        let mut config = test_config("v1");
        config.model_root = root.clone();
        let m = TestModel::start(config).await;
        let answer = m.client.clone().classify(ClassifyRequest { text: SPAM.into() }).await.unwrap().into_inner();
        assert_eq!(answer.label, "spam");
        let page = m.metrics().await;
        assert_eq!(sample(&page, "sms_model_spam_probability_count", &[("protocol", "sms")]), Some(1.0), "{name}");
        assert!(!page.contains("sms_model_reference_share{"), "{name}: {page}");
        assert!(!page.contains("sms_model_reference_spam_share{"), "{name}");
        m.server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(root);
    }
}
