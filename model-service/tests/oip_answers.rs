//! The Open Inference Protocol beside sms.v1, over real gRPC and HTTP on loopback: the
//! answers equal Classify's for 1 and 64 rows, typed and raw contents over gRPC, JSON and
//! Triton's binary extension over HTTP; the predictions are counted per protocol.

mod common;

use common::{
    TestModel,
    oip::{assert_same, classify_all, http, json, oip_client, outputs, predicted, raw, raw_bytes, texts, typed},
};
use sms_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelReadyRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest, model_infer_request::InferRequestedOutputTensor,
};

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
