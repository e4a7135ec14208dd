//! A model version is one fact: the folder it is served from, its card and its graph's
//! metadata agree on the version, the name, the classes and the threshold, or the pair is
//! refused: at start-up with one line naming both sides, on reload while the old model
//! keeps answering every call.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use common::{
    SPAM, TestModel,
    files::{copy_model, metadata_of, read_card, reloading_copy_of_v1, rewrite_graph, tempdir, wait_for, write_model},
    sample,
};
use sms_proto::v1::ClassifyRequest;

fn graph(version: &str) -> Vec<u8> {
    std::fs::read(common::repo_models().join(version).join("model.onnx")).unwrap()
}

fn with_metadata(graph: &[u8], metadata: &[(String, String)]) -> Vec<u8> {
    let metadata: Vec<_> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    rewrite_graph(graph, &metadata, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_that_disagree_with_their_graph_are_refused_under_load() {
    let (root, config) = reloading_copy_of_v1("cards");
    let folder = root.join("v1");
    let m = TestModel::start(config).await;
    let served = m.client.clone().classify(ClassifyRequest { text: SPAM.into() }).await.unwrap().into_inner();

    // A steady load that checks every answer is the served model's.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, stop, answered, failed) =
                (m.client.clone(), stop.clone(), answered.clone(), failed.clone());
            let want = served.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.classify(ClassifyRequest { text: SPAM.into() }).await {
                        Ok(r) if r.get_ref() == &want => answered.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("unexpected answer: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    let v1 = read_card(&folder);
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut card = v1.clone();
        f(&mut card);
        card
    };
    let cases: Vec<(&str, Vec<u8>, serde_json::Value)> = vec![
        // The card renamed to another version beside the v1 graph.
        (
            "card says v9",
            graph("v1"),
            edit(&|c| {
                c["version"] = "v9".into();
                c["name"] = "sms-spam-v9".into();
            }),
        ),
        // The threshold changed without a graph made with it: spam would read ham.
        ("threshold 0.99999", graph("v1"), edit(&|c| c["threshold"] = 0.99999.into())),
        ("classes swapped", graph("v1"), edit(&|c| c["classes"] = serde_json::json!(["spam", "ham"]))),
        // v2's graph under v1's card.
        ("v2 graph, v1 card", graph("v2"), v1.clone()),
        // A graph and card that agree with each other, on a version this folder does not serve.
        (
            "v9 pair in the v1 folder",
            with_metadata(&graph("v2"), &metadata_of("v9", "0.5")),
            edit(&|c| {
                c["version"] = "v9".into();
                c["name"] = "sms-spam-v9".into();
            }),
        ),
    ];
    let failures = || async { sample(&m.metrics().await, "sms_model_reloads_total", &[("outcome", "failure")]) };
    for (n, (case, graph, card)) in cases.into_iter().enumerate() {
        write_model(&folder, &graph, card);
        let want = Some((n + 1) as f64);
        wait_for(|| async { failures().await == want }).await;
        let metrics = m.metrics().await;
        let info: Vec<_> = metrics.lines().filter(|l| l.starts_with("sms_model_info{")).collect();
        assert_eq!(info.len(), 1, "{case}: {info:?}");
        assert!(
            info[0].contains(r#"model_name="sms-spam-v1""#) && info[0].contains(r#"version="v1""#),
            "{case}: {info:?}"
        );
        println!("{case}: refused; {} calls answered by the v1 model so far", answered.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(sample(&m.metrics().await, "sms_model_reloads_total", &[("outcome", "success")]), Some(0.0));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "every call answered by the served model");
    assert!(answered.load(Ordering::Relaxed) > 100);
    m.server.stop().await.unwrap();
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn a_card_that_disagrees_stops_start_up_naming_both_sides() {
    let root = tempdir("cards-start");
    let start = |version: &str| {
        let mut config = common::test_config(version);
        config.model_root = root.clone();
        async move { format!("{:#}", model_service::start(config).await.err().expect("must refuse")) }
    };
    copy_model(&common::repo_models().join("v1"), &root.join("v1"));
    let v1 = read_card(&root.join("v1"));

    let mut card = v1.clone();
    card["threshold"] = 0.99999.into();
    write_model(&root.join("v1"), &graph("v1"), card);
    let err = start("v1").await;
    assert!(err.contains("threshold") && err.contains("\"0.5\"") && err.contains("0.99999"), "{err}");

    let mut card = v1.clone();
    card["version"] = "v9".into();
    write_model(&root.join("v1"), &graph("v1"), card);
    let err = start("v1").await;
    assert!(err.contains("\"v9\"") && err.contains("\"v1\"") && err.contains("MODEL_VERSION"), "{err}");

    // A graph exported without the metadata cannot vouch for its card.
    write_model(&root.join("v1"), &with_metadata(&graph("v1"), &[]), v1.clone());
    let err = start("v1").await;
    assert!(err.contains("no `version` metadata"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}
