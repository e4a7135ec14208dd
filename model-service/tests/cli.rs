//! The gRPC surface as a user sees it: the real grpcurl with no .proto at hand. (The real
//! binary's start-up errors are tested as processes in tests/reliability.)

mod common;

use std::process::{Command, Output};

use common::{SPAM, TestModel};

fn grpcurl(args: &[&str]) -> Output {
    let bin = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    Command::new(&bin)
        .args(["-max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run grpcurl ({bin}): {e}; `make test` installs it"))
}

fn ok_stdout(out: Output) -> String {
    assert!(out.status.success(), "grpcurl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let m = TestModel::version("v1").await;
    let addr = m.server.grpc_addr.to_string();
    let (addr, spam_body) = (addr.clone(), format!("{{\"text\":{}}}", serde_json::to_string(SPAM).unwrap()));
    let (list, describe, classify, health, info, bad) = tokio::task::spawn_blocking(move || {
        (
            ok_stdout(grpcurl(&["-plaintext", &addr, "list"])),
            ok_stdout(grpcurl(&["-plaintext", &addr, "describe", "sms.v1.SpamClassifier"])),
            ok_stdout(grpcurl(&["-plaintext", "-d", &spam_body, &addr, "sms.v1.SpamClassifier/Classify"])),
            ok_stdout(grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])),
            ok_stdout(grpcurl(&["-plaintext", &addr, "sms.v1.SpamClassifier/GetModelInfo"])),
            grpcurl(&["-plaintext", "-d", r#"{"text":"   "}"#, &addr, "sms.v1.SpamClassifier/Classify"]),
        )
    })
    .await
    .unwrap();

    for service in ["sms.v1.SpamClassifier", "inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(list.lines().any(|l| l == service), "list: {list}");
    }
    assert!(describe.contains("rpc Classify") && describe.contains("rpc GetModelInfo"), "{describe}");
    let answer: serde_json::Value = serde_json::from_str(&classify).unwrap();
    assert_eq!(answer["label"], "spam");
    assert_eq!(answer["modelVersion"], "v1");
    assert!(answer["spamProbability"].as_f64().unwrap() > 0.5);
    assert!(health.contains("\"SERVING\""), "{health}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["classes"], serde_json::json!(["ham", "spam"]));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("InvalidArgument") && stderr.contains("empty"), "{stderr}");
    m.server.stop().await.unwrap();
}

/// Reflection v1 (what grpcurl 1.9+, grpcui and Postman ask first) and v1alpha (older
/// clients) both list every service, the Open Inference Protocol's included.
#[tokio::test]
async fn reflection_v1_and_v1alpha_list_both_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let m = TestModel::version("v1").await;
    let channel = common::channel(m.server.grpc_addr).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer.message_response
    else {
        panic!("not a list: {answer:?}")
    };
    let v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a list: {answer:?}")
    };
    let v1alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for names in [&v1_names, &v1alpha_names] {
        for service in ["sms.v1.SpamClassifier", "inference.GRPCInferenceService", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == service), "{service} not in {names:?}");
        }
    }
    assert!(v1_names.iter().any(|n| n == "grpc.reflection.v1.ServerReflection"), "{v1_names:?}");
    m.server.stop().await.unwrap();
}
