//! The Open Inference Protocol beside sms.v1, over real gRPC and HTTP on loopback: the
//! answers equal Classify's, 1 and 64 rows, typed and raw contents; every bad input gets
//! the protocol's error and leaves the server serving; a batch holds queue places per
//! row; the predictions are counted per protocol; the shadow compares these calls too.

mod common;

use std::time::Duration;

use common::{HAM, SPAM, TestModel, sample, test_config};
use sms_proto::{
    GUESS_METADATA,
    inference::{
        InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelReadyRequest,
        ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    },
    v1::ClassifyRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};

fn texts(n: usize) -> Vec<String> {
    let base = [
        SPAM,
        HAM,
        "Free entry to win a prize, txt WIN to 80086",
        "  see you\tat lunch?  ",
        "Ok... Ur typical reply...",
    ];
    (0..n).map(|i| format!("{} #{i}", base[i % base.len()])).collect()
}

fn raw_bytes(rows: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for r in rows {
        raw.extend_from_slice(&(r.as_ref().len() as u32).to_le_bytes());
        raw.extend_from_slice(r.as_ref());
    }
    raw
}

fn typed(rows: &[impl AsRef<[u8]>]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "sms-spam".into(),
        id: "call-1".into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![rows.len() as i64],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                bytes_contents: rows.iter().map(|r| r.as_ref().to_vec()).collect(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

fn raw(rows: &[impl AsRef<[u8]>]) -> ModelInferRequest {
    let mut r = typed(rows);
    r.inputs[0].contents = None;
    r.inputs[0].shape = vec![rows.len() as i64, 1];
    r.raw_input_contents = vec![raw_bytes(rows)];
    r
}

/// Labels and probabilities of an answer, typed or raw.
fn outputs(r: &ModelInferResponse) -> (Vec<String>, Vec<f32>) {
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

async fn oip_client(m: &TestModel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(common::channel(m.server.grpc_addr).await)
}

/// One HTTP/1.1 request; the status and the body.
async fn http(m: &TestModel, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<u8>) {
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
fn predicted(metrics: &str, protocol: &str) -> f64 {
    ["spam", "ham"]
        .iter()
        .map(|r| {
            sample(metrics, "sms_model_predictions_total", &[("protocol", protocol), ("result", r)]).expect(protocol)
        })
        .sum()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

async fn classify_all(m: &TestModel, texts: &[String]) -> (Vec<String>, Vec<f32>) {
    let mut client = m.client.clone();
    let (mut labels, mut probabilities) = (Vec::new(), Vec::new());
    for t in texts {
        let r = client.classify(ClassifyRequest { text: t.clone() }).await.unwrap().into_inner();
        labels.push(r.label);
        probabilities.push(r.spam_probability);
    }
    (labels, probabilities)
}

fn assert_same(what: &str, got: &(Vec<String>, Vec<f32>), want: &(Vec<String>, Vec<f32>)) {
    assert_eq!(got.0, want.0, "{what}: labels");
    assert_eq!(got.1.len(), want.1.len(), "{what}: probabilities");
    for (g, w) in got.1.iter().zip(&want.1) {
        assert!((g - w).abs() <= 1e-6, "{what}: {g} against Classify's {w}");
    }
}

#[tokio::test]
async fn grpc_answers_equal_classify_for_1_and_64_rows_typed_and_raw() {
    for version in ["v1", "v2"] {
        let m = TestModel::version(version).await;
        let mut oip = oip_client(&m).await;
        assert!(oip.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
        assert!(oip.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
        for v in ["", version] {
            let ready = oip.model_ready(ModelReadyRequest { name: "sms-spam".into(), version: v.into() }).await;
            assert!(ready.unwrap().into_inner().ready);
        }
        let meta = oip.model_metadata(ModelMetadataRequest { name: "sms-spam".into(), version: "".into() }).await;
        let meta = meta.unwrap().into_inner();
        assert_eq!((meta.name.as_str(), meta.versions.clone()), ("sms-spam", vec![version.to_string()]));
        assert_eq!(meta.inputs[0].datatype, "BYTES");
        let server = oip.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
        assert_eq!(server.name, "sms-model-service");
        for n in [1, 64] {
            let rows = texts(n);
            let want = classify_all(&m, &rows).await;
            for (how, request) in [("typed", typed(&rows)), ("raw", raw(&rows))] {
                let r = oip.model_infer(request).await.unwrap().into_inner();
                assert_eq!(
                    (r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()),
                    ("sms-spam", version, "call-1")
                );
                assert_eq!(r.outputs.iter().map(|o| o.shape.clone()).collect::<Vec<_>>(), vec![vec![n as i64]; 2]);
                assert_eq!(r.raw_output_contents.is_empty(), how == "typed", "{how} in, {how} out");
                assert_same(&format!("{version} {how} {n} rows"), &outputs(&r), &want);
            }
        }
        // The outputs asked for, and only those.
        let mut only = typed(&texts(2));
        only.outputs =
            vec![InferRequestedOutputTensor { name: "spam_probability".into(), parameters: Default::default() }];
        let r = oip.model_infer(only).await.unwrap().into_inner();
        assert_eq!(r.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["spam_probability"]);
        let mv = oip.model_infer(ModelInferRequest { model_version: version.into(), ..typed(&texts(1)) }).await;
        assert!(mv.is_ok());
        let m_text = m.metrics().await;
        assert_eq!(predicted(&m_text, "oip-grpc"), 2.0 * (1.0 + 64.0) + 2.0 + 1.0, "{m_text}");
        assert_eq!(predicted(&m_text, "sms"), 65.0);
        assert_eq!(predicted(&m_text, "oip-rest"), 0.0);
        m.server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn rest_answers_equal_classify_json_and_binary() {
    let m = TestModel::version("v2").await;
    for (path, want) in [
        ("/v2/health/live", serde_json::json!({"live": true})),
        ("/v2/health/ready", serde_json::json!({"ready": true})),
        ("/v2/models/sms-spam/ready", serde_json::json!({"name": "sms-spam", "ready": true})),
        ("/v2/models/sms-spam/versions/v2/ready", serde_json::json!({"name": "sms-spam", "ready": true})),
    ] {
        let (status, body) = http(&m, "GET", path, &[], b"").await;
        assert_eq!((status, json(&body)), (200, want), "{path}");
    }
    let (status, body) = http(&m, "GET", "/v2/models/sms-spam/versions/v2", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["versions"], serde_json::json!(["v2"]));
    assert_eq!(json(&http(&m, "GET", "/v2", &[], b"").await.1)["name"], "sms-model-service");
    for n in [1, 64] {
        let rows = texts(n);
        let want = classify_all(&m, &rows).await;
        let request = serde_json::json!({"id": "r1", "inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": rows}]});
        let (status, body) = http(&m, "POST", "/v2/models/sms-spam/infer", &[], request.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let body = json(&body);
        assert_eq!((&body["id"], &body["model_version"]), (&serde_json::json!("r1"), &serde_json::json!("v2")));
        let labels =
            body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let probabilities =
            body["outputs"][1]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_same(&format!("REST JSON {n} rows"), &(labels, probabilities), &want);

        // Triton's binary tensor extension, both ways.
        let raw_rows = raw_bytes(&rows);
        let header = serde_json::json!({
            "inputs": [{"name": "text", "shape": [n, 1], "datatype": "BYTES", "parameters": {"binary_data_size": raw_rows.len()}}],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&raw_rows);
        let (status, answer) = http(
            &m,
            "POST",
            "/v2/models/sms-spam/versions/v2/infer",
            &[("Inference-Header-Content-Length", header.len().to_string())],
            &body,
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let json_end = answer.iter().position(|&b| b == b'}').map(|_| {
            // The JSON part ends where serde stops reading one value.
            let mut de = serde_json::Deserializer::from_slice(&answer).into_iter::<serde_json::Value>();
            de.next();
            de.byte_offset()
        });
        let json_end = json_end.unwrap();
        let head = json(&answer[..json_end]);
        let sizes: Vec<usize> = head["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["parameters"]["binary_data_size"].as_u64().unwrap() as usize)
            .collect();
        let (labels_raw, probs_raw) = answer[json_end..].split_at(sizes[0]);
        assert_eq!(probs_raw.len(), sizes[1]);
        let response = ModelInferResponse {
            outputs: head["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| sms_proto::inference::model_infer_response::InferOutputTensor {
                    name: o["name"].as_str().unwrap().into(),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: vec![labels_raw.to_vec(), probs_raw.to_vec()],
            ..Default::default()
        };
        assert_same(&format!("REST binary {n} rows"), &outputs(&response), &want);
    }
    let metrics = m.metrics().await;
    assert_eq!(predicted(&metrics, "oip-rest"), 130.0);
    m.server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_the_protocols_error_and_nothing_else_is_affected() {
    let m = TestModel::version("v1").await;
    let mut oip = oip_client(&m).await;
    let five_mb = "a".repeat(5 * 1024 * 1024);
    let over_long = "a".repeat(1001);
    let mut cases: Vec<(&str, ModelInferRequest, Code, &str)> = vec![
        (
            "wrong datatype",
            {
                let mut r = typed(&["hi"]);
                r.inputs[0].datatype = "FP32".into();
                r
            },
            Code::InvalidArgument,
            "must be BYTES",
        ),
        (
            "wrong shape",
            {
                let mut r = typed(&["hi"]);
                r.inputs[0].shape = vec![1, 2];
                r
            },
            Code::InvalidArgument,
            "[N] or [N, 1]",
        ),
        (
            "shape and data disagree",
            {
                let mut r = typed(&["hi", "there"]);
                r.inputs[0].shape = vec![3];
                r
            },
            Code::InvalidArgument,
            "3 rows",
        ),
        (
            "unknown model",
            ModelInferRequest { model_name: "other".into(), ..typed(&["hi"]) },
            Code::NotFound,
            "serves model \"sms-spam\" version \"v1\"",
        ),
        (
            "unknown version",
            ModelInferRequest { model_version: "v9".into(), ..typed(&["hi"]) },
            Code::NotFound,
            "serves version \"v1\"",
        ),
        (
            "unknown input",
            {
                let mut r = typed(&["hi"]);
                r.inputs[0].name = "sms".into();
                r
            },
            Code::InvalidArgument,
            "unknown input",
        ),
        (
            "unknown output",
            {
                let mut r = typed(&["hi"]);
                r.outputs =
                    vec![InferRequestedOutputTensor { name: "probabilities".into(), parameters: Default::default() }];
                r
            },
            Code::InvalidArgument,
            "unknown output",
        ),
        ("empty text", typed(&[" \t "]), Code::InvalidArgument, "row 0 of input `text`: the message is empty"),
        (
            "over-long text",
            typed(&["ok".to_string(), over_long.clone()]),
            Code::InvalidArgument,
            "row 1 of input `text`: the message is 1001 characters",
        ),
        ("more rows than the bound", typed(&texts(65)), Code::InvalidArgument, "at most 64 rows"),
        (
            "non-UTF-8 bytes",
            typed(&[b"ok".to_vec(), vec![0xff, 0xfe]]),
            Code::InvalidArgument,
            "row 1 of input `text` is not valid UTF-8",
        ),
        (
            "raw prefixes that do not add up",
            {
                let mut r = raw(&["hello", "there"]);
                r.raw_input_contents[0].pop();
                r
            },
            Code::InvalidArgument,
            "do not add up",
        ),
        (
            "typed and raw mixed",
            {
                let mut r = raw(&["hi"]);
                r.inputs[0].contents = typed(&["hi"]).inputs[0].contents.clone();
                r
            },
            Code::InvalidArgument,
            "never both",
        ),
        (
            "no data",
            {
                let mut r = typed(&["hi"]);
                r.inputs[0].contents = None;
                r
            },
            Code::InvalidArgument,
            "no data",
        ),
        ("a 5 MB request", typed(&[five_mb.as_str()]), Code::OutOfRange, "too large"),
    ];
    // A 5 MB request: tonic refuses a message over the bound before decoding it.
    for (what, request, code, says) in cases.drain(..) {
        let err = oip.model_infer(request).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(says), "{what}: {:?} does not say {says:?}", err.message());
        // Nothing else is affected: the next good call is answered.
        let ok = oip.model_infer(typed(&[SPAM])).await.unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(outputs(&ok.into_inner()).0, ["spam"], "after {what}");
    }

    // The same refusals over HTTP, with the protocol's error body.
    let infer = |rows: serde_json::Value, datatype: &str, shape: serde_json::Value| {
        serde_json::json!({"inputs": [{"name": "text", "shape": shape, "datatype": datatype, "data": rows}]})
            .to_string()
    };
    let big = infer(serde_json::json!([five_mb]), "BYTES", serde_json::json!([1]));
    let rest_cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "wrong datatype",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!(["hi"]), "INT32", serde_json::json!([1])),
            400,
            "must be BYTES",
        ),
        (
            "wrong shape",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!(["hi"]), "BYTES", serde_json::json!([1, 1, 1])),
            400,
            "[N] or [N, 1]",
        ),
        (
            "numbers for text",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!([1]), "BYTES", serde_json::json!([1])),
            400,
            "must be strings",
        ),
        (
            "unknown model",
            "/v2/models/nope/infer",
            infer(serde_json::json!(["hi"]), "BYTES", serde_json::json!([1])),
            404,
            "not served here",
        ),
        (
            "unknown version",
            "/v2/models/sms-spam/versions/v7/infer",
            infer(serde_json::json!(["hi"]), "BYTES", serde_json::json!([1])),
            404,
            "no version \"v7\"",
        ),
        (
            "empty text",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!([""]), "BYTES", serde_json::json!([1])),
            400,
            "empty",
        ),
        (
            "over-long text",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!([over_long]), "BYTES", serde_json::json!([1])),
            400,
            "1001 characters",
        ),
        (
            "more rows than the bound",
            "/v2/models/sms-spam/infer",
            infer(serde_json::json!(texts(65)), "BYTES", serde_json::json!([65])),
            400,
            "at most 64 rows",
        ),
        ("not JSON", "/v2/models/sms-spam/infer", "{nope".into(), 400, "not an inference request"),
        ("a 5 MB request", "/v2/models/sms-spam/infer", big, 413, "over 1048576 bytes"),
    ];
    for (what, path, body, status, says) in rest_cases {
        let (got, answer) = http(&m, "POST", path, &[], body.as_bytes()).await;
        let error = json(&answer);
        assert_eq!(got, status, "{what}: {error}");
        assert_eq!(error.as_object().map(|o| o.len()), Some(1), "{what}: only `error`: {error}");
        assert!(error["error"].as_str().unwrap().contains(says), "{what}: {error} does not say {says:?}");
    }
    // Binary data whose prefixes do not add up, and non-UTF-8 bytes, over HTTP.
    for (what, rows, says) in [
        (
            "raw prefixes that do not add up",
            {
                let mut r = raw_bytes(&["hello"]);
                r.pop();
                r
            },
            "do not add up",
        ),
        ("non-UTF-8 bytes", raw_bytes(&[vec![0xc3u8, 0x28]]), "not valid UTF-8"),
    ] {
        let header = serde_json::json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": rows.len()}}]}).to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&rows);
        let (got, answer) = http(
            &m,
            "POST",
            "/v2/models/sms-spam/infer",
            &[("Inference-Header-Content-Length", header.len().to_string())],
            &body,
        )
        .await;
        assert_eq!(got, 400, "{what}");
        assert!(
            json(&answer)["error"].as_str().unwrap().contains(says),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (status, body) = http(&m, "GET", "/v2/models/nope", &[], b"").await;
    assert_eq!(status, 404);
    assert!(json(&body)["error"].as_str().unwrap().contains("sms-spam"));
    let (status, _) = http(&m, "GET", "/v1/models", &[], b"").await;
    assert_eq!(status, 404);
    // Still serving both protocols, and nothing was predicted for the refused calls.
    let mut client = m.client.clone();
    assert_eq!(client.classify(ClassifyRequest { text: HAM.into() }).await.unwrap().into_inner().label, "ham");
    let metrics = m.metrics().await;
    assert_eq!(predicted(&metrics, "oip-rest"), 0.0);
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

#[tokio::test]
async fn the_shadow_compares_calls_that_came_in_through_the_protocol() {
    let mut config = test_config("v2");
    config.source = "shadow".into();
    config.reference_version = Some("v1".into());
    let m = TestModel::start(config).await;
    let mut oip = oip_client(&m).await;
    let rows = ["Want explicit SEX in 30 secs? Ring 02073162414 now! Costs 20p/min", SPAM, HAM];
    let mut with_guess = typed(&rows);
    with_guess.parameters.insert(
        "guess".into(),
        sms_proto::inference::InferParameter {
            parameter_choice: Some(sms_proto::inference::infer_parameter::ParameterChoice::StringParam("spam".into())),
        },
    );
    oip.model_infer(with_guess).await.unwrap();
    let mut by_metadata = tonic::Request::new(typed(&[HAM]));
    by_metadata.metadata_mut().insert(GUESS_METADATA, "ham".parse().unwrap());
    oip.model_infer(by_metadata).await.unwrap();
    let body = serde_json::json!({"parameters": {"guess": "ham"}, "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [HAM]}]});
    assert_eq!(http(&m, "POST", "/v2/models/sms-spam/infer", &[], body.to_string().as_bytes()).await.0, 200);
    let metrics = m.metrics().await;
    let compared = |outcome| sample(&metrics, "sms_shadow_comparisons_total", &[("outcome", outcome)]).unwrap_or(0.0);
    assert_eq!(compared("agree") + compared("disagree"), 5.0, "{metrics}");
    let guesses = |a| sample(&metrics, "sms_model_guesses_total", &[("agreement", a)]).unwrap_or(0.0);
    assert_eq!(guesses("agree") + guesses("disagree"), 5.0, "{metrics}");
    m.server.stop().await.unwrap();
}
