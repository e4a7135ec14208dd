//! Model folders for tests: private copies of the bundled models, cards edited as a user
//! would, and graphs rewritten at the protobuf level (new metadata, a big initializer)
//! to make models that training never would.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use sha2::Digest;

/// A private copy of models/v1 and a v1 server's config that looks for new files there
/// every 200 ms.
pub fn reloading_copy_of_v1(name: &str) -> (PathBuf, model_service::Config) {
    let root = tempdir(name);
    copy_model(&super::repo_models().join("v1"), &root.join("v1"));
    let mut config = super::test_config("v1");
    config.model_root = root.clone();
    config.reload_interval = Some(Duration::from_millis(200));
    (root, config)
}

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-service-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    // Write under a temporary name and rename, as a deployment should, so a reload never
    // sees half a file.
    for f in ["model.onnx", "model.json"] {
        let tmp = to.join(format!(".{f}.tmp"));
        std::fs::copy(from.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, to.join(f)).unwrap();
    }
}

pub fn read_card(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap()
}

/// Writes `graph` and `card` into `dir` (graph first, each renamed into place), with the
/// card naming the graph's sha256.
pub fn write_model(dir: &Path, graph: &[u8], mut card: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    card["onnx_sha256"] = sha2::Sha256::digest(graph).iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    for (name, bytes) in [("model.onnx", graph.to_vec()), ("model.json", card.to_string().into_bytes())] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// `graph` (an ONNX ModelProto) with its metadata replaced by `metadata` and, when
/// `padding_bytes` > 0, an unused UINT8 initializer of that many bytes added to its graph.
pub fn rewrite_graph(graph: &[u8], metadata: &[(&str, &str)], padding_bytes: usize) -> Vec<u8> {
    const GRAPH: u32 = 7;
    const METADATA_PROPS: u32 = 14;
    let mut out = Vec::with_capacity(graph.len() + padding_bytes + 64);
    let mut rest = graph;
    while !rest.is_empty() {
        let start = rest;
        let (tag, wire) = decode_key(&mut rest).unwrap();
        let body: &[u8] = match wire {
            WireType::Varint => {
                decode_varint(&mut rest).unwrap();
                &[]
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).unwrap() as usize;
                let (body, after) = rest.split_at(len);
                rest = after;
                body
            }
            WireType::SixtyFourBit => {
                rest = &rest[8..];
                &[]
            }
            WireType::ThirtyTwoBit => {
                rest = &rest[4..];
                &[]
            }
            other => panic!("unexpected wire type {other:?} in an ONNX model"),
        };
        let whole = &start[..start.len() - rest.len()];
        match tag {
            METADATA_PROPS => {}
            GRAPH if padding_bytes > 0 => {
                let mut g = body.to_vec();
                let mut tensor = Vec::new();
                // TensorProto: dims = 1, data_type = 2 (UINT8), name = 8, raw_data = 9.
                encode_key(1, WireType::Varint, &mut tensor);
                encode_varint(padding_bytes as u64, &mut tensor);
                encode_key(2, WireType::Varint, &mut tensor);
                encode_varint(2, &mut tensor);
                length_delimited(8, b"unused_padding", &mut tensor);
                length_delimited(9, &vec![7u8; padding_bytes], &mut tensor);
                length_delimited(5, &tensor, &mut g); // GraphProto.initializer
                length_delimited(GRAPH, &g, &mut out);
            }
            _ => out.extend_from_slice(whole),
        }
    }
    for (key, value) in metadata {
        let mut entry = Vec::new();
        length_delimited(1, key.as_bytes(), &mut entry);
        length_delimited(2, value.as_bytes(), &mut entry);
        length_delimited(METADATA_PROPS, &entry, &mut out);
    }
    out
}

fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The metadata training writes for `version` (training/train.py `export_onnx`).
pub fn metadata_of(version: &str, threshold: &str) -> Vec<(String, String)> {
    vec![
        ("name".into(), format!("sms-spam-{version}")),
        ("version".into(), version.into()),
        ("classes".into(), "ham,spam".into()),
        ("threshold".into(), threshold.into()),
        ("normalization".into(), "trim+collapse-whitespace".into()),
    ]
}

pub async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
