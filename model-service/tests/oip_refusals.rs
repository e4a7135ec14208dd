//! Every bad Open Inference Protocol call, over gRPC and over HTTP, gets the protocol's
//! error naming the problem, and leaves the server serving both protocols, with nothing
//! predicted for the refused calls.

mod common;

use common::{
    HAM, SPAM, TestModel,
    oip::{http, json, oip_client, outputs, predicted, raw, raw_bytes, texts, typed},
};
use sms_proto::{
    inference::{ModelInferRequest, model_infer_request::InferRequestedOutputTensor},
    v1::ClassifyRequest,
};
use tonic::Code;

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
