//! The Open Inference Protocol from a client's side, for the tests of it: requests with
//! typed or raw rows, answers decoded either way, Classify's answers to compare them with,
//! one HTTP/1.1 call to the protocol's HTTP port, and the predictions counted per protocol.

use std::time::Duration;

use sms_proto::{
    inference::{
        InferTensorContents, ModelInferRequest, ModelInferResponse,
        grpc_inference_service_client::GrpcInferenceServiceClient, model_infer_request::InferInputTensor,
    },
    v1::ClassifyRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::{HAM, SPAM, TestModel, sample};

pub fn texts(n: usize) -> Vec<String> {
    let base = [
        SPAM,
        HAM,
        "Free entry to win a prize, txt WIN to 80086",
        "  see you\tat lunch?  ",
        "Ok... Ur typical reply...",
    ];
    (0..n).map(|i| format!("{} #{i}", base[i % base.len()])).collect()
}

pub fn raw_bytes(rows: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for r in rows {
        raw.extend_from_slice(&(r.as_ref().len() as u32).to_le_bytes());
        raw.extend_from_slice(r.as_ref());
    }
    raw
}

pub fn typed(rows: &[impl AsRef<[u8]>]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "sms-spam".into(),
        id: "call-1".into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![rows.len() as i64],
            parameters: Default::default(),
            contents: Some(Box::new(InferTensorContents {
                bytes_contents: rows.iter().map(|r| r.as_ref().to_vec()).collect(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

pub fn raw(rows: &[impl AsRef<[u8]>]) -> ModelInferRequest {
    let mut r = typed(rows);
    r.inputs[0].contents = None;
    r.inputs[0].shape = vec![rows.len() as i64, 1];
    r.raw_input_contents = vec![raw_bytes(rows)];
    r
}

/// Labels and probabilities of an answer, typed or raw.
pub fn outputs(r: &ModelInferResponse) -> (Vec<String>, Vec<f32>) {
    let (mut labels, mut probabilities) = (Vec::new(), Vec::new());
    for (i, o) in r.outputs.iter().enumerate() {
        match (o.name.as_str(), &o.contents, r.raw_output_contents.get(i)) {
            ("label", Some(c), _) => {
                labels = c.bytes_contents.iter().map(|b| String::from_utf8(b.clone()).unwrap()).collect()
            }
            ("spam_probability", Some(c), _) => probabilities = c.fp32_contents.clone(),
            ("label", None, Some(raw)) => {
                let mut rest = &raw[..];
                while !rest.is_empty() {
                    let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                    labels.push(String::from_utf8(rest[4..4 + n].to_vec()).unwrap());
                    rest = &rest[4 + n..];
                }
            }
            ("spam_probability", None, Some(raw)) => {
                probabilities = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
    (labels, probabilities)
}

pub async fn oip_client(m: &TestModel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(super::channel(m.server.grpc_addr).await)
}

/// One HTTP/1.1 request; the status and the body.
pub async fn http(m: &TestModel, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<u8>) {
    let addr = m.server.inference_http_addr;
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        // A server may answer (413) before it reads all of a large body.
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
        let status = std::str::from_utf8(&answer[9..12]).unwrap().parse().unwrap();
        (status, answer[split + 4..].to_vec())
    };
    tokio::time::timeout(Duration::from_secs(20), fut).await.expect("HTTP call timed out")
}

/// Predictions counted for calls through `protocol`, spam and ham.
pub fn predicted(metrics: &str, protocol: &str) -> f64 {
    ["spam", "ham"]
        .iter()
        .map(|r| {
            sample(metrics, "sms_model_predictions_total", &[("protocol", protocol), ("result", r)]).expect(protocol)
        })
        .sum()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

pub async fn classify_all(m: &TestModel, texts: &[String]) -> (Vec<String>, Vec<f32>) {
    let mut client = m.client.clone();
    let (mut labels, mut probabilities) = (Vec::new(), Vec::new());
    for t in texts {
        let r = client.classify(ClassifyRequest { text: t.clone() }).await.unwrap().into_inner();
        labels.push(r.label);
        probabilities.push(r.spam_probability);
    }
    (labels, probabilities)
}

pub fn assert_same(what: &str, got: &(Vec<String>, Vec<f32>), want: &(Vec<String>, Vec<f32>)) {
    assert_eq!(got.0, want.0, "{what}: labels");
    assert_eq!(got.1.len(), want.1.len(), "{what}: probabilities");
    for (g, w) in got.1.iter().zip(&want.1) {
        assert!((g - w).abs() <= 1e-6, "{what}: {g} against Classify's {w}");
    }
}
