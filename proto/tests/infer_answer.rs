//! The server's ModelInfer answer is the protocol's `ModelInferResponse` on the wire: the
//! same bytes the generated message encodes to, and what clients decode.

use std::sync::Arc;

use prost::Message;
use sms_proto::{
    infer_answer::{Elements, ModelInferAnswer, OutputTensor},
    inference::{InferTensorContents, ModelInferResponse, model_infer_response::InferOutputTensor},
};

fn answer(labels: &[&'static str], probabilities: &[f32], id: &str, raw: bool) -> ModelInferAnswer {
    ModelInferAnswer {
        model_name: "sms-spam",
        model_version: Arc::from("v2"),
        id: id.into(),
        outputs: vec![
            OutputTensor { name: "label", datatype: "BYTES", elements: Elements::Bytes(labels.to_vec()) },
            OutputTensor {
                name: "spam_probability",
                datatype: "FP32",
                elements: Elements::Fp32(probabilities.to_vec()),
            },
        ],
        raw,
    }
}

/// The same answer as the generated message.
fn generated(labels: &[&str], probabilities: &[f32], id: &str, raw: bool) -> ModelInferResponse {
    let n = labels.len() as i64;
    let tensor = |name: &str, datatype: &str, contents: InferTensorContents| InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![n],
        parameters: Default::default(),
        contents: (!raw).then_some(contents),
    };
    let mut raw_labels = Vec::new();
    for l in labels {
        raw_labels.extend_from_slice(&(l.len() as u32).to_le_bytes());
        raw_labels.extend_from_slice(l.as_bytes());
    }
    let raw_probabilities = probabilities.iter().flat_map(|p| p.to_le_bytes()).collect();
    ModelInferResponse {
        model_name: "sms-spam".into(),
        model_version: "v2".into(),
        id: id.into(),
        parameters: Default::default(),
        outputs: vec![
            tensor(
                "label",
                "BYTES",
                InferTensorContents {
                    bytes_contents: labels.iter().map(|l| l.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
            ),
            tensor(
                "spam_probability",
                "FP32",
                InferTensorContents { fp32_contents: probabilities.to_vec(), ..Default::default() },
            ),
        ],
        raw_output_contents: if raw { vec![raw_labels, raw_probabilities] } else { vec![] },
    }
}

#[test]
fn the_answer_encodes_as_the_generated_response_does() {
    let cases: [(&[&'static str], &[f32], &str); 4] = [
        (&["spam"], &[0.97], ""),
        (&["ham"], &[0.0], "call-7"),
        (&["ham", "spam", "ham"], &[0.01, 0.5, f32::MIN_POSITIVE], "a-much-longer-request-id"),
        (&[], &[], "empty"),
    ];
    for (labels, probabilities, id) in cases {
        for raw in [false, true] {
            let ours = answer(labels, probabilities, id, raw);
            let theirs = generated(labels, probabilities, id, raw);
            let bytes = ours.encode_to_vec();
            assert_eq!(ours.encoded_len(), bytes.len(), "{labels:?} raw={raw}");
            assert_eq!(bytes, theirs.encode_to_vec(), "{labels:?} raw={raw}");
            assert_eq!(ModelInferResponse::decode(&bytes[..]).unwrap(), theirs, "{labels:?} raw={raw}");
        }
    }
}

#[test]
fn one_output_alone_and_in_the_order_asked() {
    let mut ours = answer(&["spam", "ham"], &[0.9, 0.1], "x", true);
    ours.outputs.reverse();
    ours.outputs.truncate(1);
    let decoded = ModelInferResponse::decode(&ours.encode_to_vec()[..]).unwrap();
    assert_eq!(decoded.outputs.len(), 1);
    assert_eq!(decoded.outputs[0].name, "spam_probability");
    assert_eq!(decoded.outputs[0].shape, [2]);
    assert_eq!(decoded.raw_output_contents, [[0.9f32.to_le_bytes(), 0.1f32.to_le_bytes()].concat()]);
}

#[test]
fn the_answer_is_never_decoded() {
    let bytes = answer(&["spam"], &[0.9], "", false).encode_to_vec();
    let mut ours = answer(&[], &[], "", false);
    assert!(ours.merge(&bytes[..]).is_err());
}
