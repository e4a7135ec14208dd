//! The shadow compares itself with the serving model on the same messages: a v2 shadow
//! with REFERENCE_VERSION=v1 counts agreement and the probability gap per call, keeps a
//! bounded sample of disagreements (texts only when allowed), and both models count
//! agreement with the user's guess carried in the call's metadata; calls that came in
//! through the Open Inference Protocol are compared and counted too.

mod common;

use common::{
    HAM, SPAM, TestModel,
    oip::{http, oip_client, typed},
    sample, test_config,
};
use sms_proto::{
    GUESS_METADATA,
    v1::{ClassifyRequest, ListDisagreementsRequest},
};

/// Messages from the data set's test split, v1 and v2 disagree on the last three.
const MESSAGES: &[(&str, &str)] = &[
    (SPAM, "spam"),
    (HAM, "ham"),
    ("Total video converter free download type this in google search:)", "ham"),
    ("Ok... Ur typical reply...", "ham"),
    ("Want explicit SEX in 30 secs? Ring 02073162414 now! Costs 20p/min", "spam"),
];

fn call(text: &str, guess: &str) -> tonic::Request<ClassifyRequest> {
    let mut r = tonic::Request::new(ClassifyRequest { text: text.into() });
    r.metadata_mut().insert(GUESS_METADATA, guess.parse().unwrap());
    r
}

async fn shadow(keep_texts: bool, kept: usize) -> TestModel {
    let mut config = test_config("v2");
    config.source = "shadow".into();
    config.reference_version = Some("v1".into());
    config.disagreement_texts = keep_texts;
    config.disagreements_kept = kept;
    TestModel::start(config).await
}

#[tokio::test]
async fn the_shadow_counts_agreement_with_the_serving_model_on_the_same_messages() {
    let mut serving = TestModel::version("v1").await;
    let mut shadow = shadow(false, 100).await;
    let mut disagreeing = Vec::new();
    for (text, guess) in MESSAGES {
        let v1 = serving.client.classify(call(text, guess)).await.unwrap().into_inner();
        let v2 = shadow.client.classify(call(text, guess)).await.unwrap().into_inner();
        if v1.label != v2.label {
            disagreeing.push((*text, v1.label, v2.label));
        }
    }
    println!("v1 and v2 disagree on {} of {} messages: {disagreeing:?}", disagreeing.len(), MESSAGES.len());
    assert_eq!(disagreeing.len(), 3);

    let m = shadow.metrics().await;
    let count =
        |outcome| sample(&m, "sms_shadow_comparisons_total", &[("reference_version", "v1"), ("outcome", outcome)]);
    assert_eq!(count("disagree"), Some(disagreeing.len() as f64), "{m}");
    assert_eq!(count("agree"), Some((MESSAGES.len() - disagreeing.len()) as f64), "{m}");
    assert_eq!(sample(&m, "sms_shadow_probability_gap_count", &[("source", "shadow")]), Some(MESSAGES.len() as f64));
    // Every compared call's gap is at most 1; the disagreeing ones are above 0.3 here.
    assert_eq!(sample(&m, "sms_shadow_probability_gap_bucket", &[("le", "0.2")]), Some(2.0), "{m}");

    // Both models count agreement with the users' guesses (the shadow's never shown to them).
    for (server, label) in [(&serving, "v1"), (&shadow, "v2")] {
        let m = server.metrics().await;
        let agree = sample(&m, "sms_model_guesses_total", &[("agreement", "agree")]).unwrap();
        let disagree = sample(&m, "sms_model_guesses_total", &[("agreement", "disagree")]).unwrap();
        println!("{label}: agrees with the guess on {agree} of {} calls", agree + disagree);
        assert_eq!(agree + disagree, MESSAGES.len() as f64);
    }
    // A serving model without a reference exports no comparison series.
    assert!(!serving.metrics().await.contains("sms_shadow_comparisons_total"));

    // The disagreements, newest first, with both answers and no text by default.
    let list = shadow.client.list_disagreements(ListDisagreementsRequest { limit: 0 }).await.unwrap().into_inner();
    assert_eq!((list.seen, list.capacity), (3, 100));
    let kept: Vec<_> = list.disagreements.iter().map(|d| (d.label.as_str(), d.reference_label.as_str())).collect();
    let want: Vec<_> = disagreeing.iter().rev().map(|(_, v1, v2)| (v2.as_str(), v1.as_str())).collect();
    assert_eq!(kept, want);
    for d in &list.disagreements {
        assert!(d.text.is_empty(), "texts are personal data: not kept unless allowed");
        assert_eq!(d.reference_version, "v1");
        assert_eq!(d.trace_id.len(), 32);
        assert!(matches!(d.guess.as_str(), "spam" | "ham"));
        assert_ne!(d.spam_probability >= 0.5, d.reference_spam_probability >= 0.5);
    }
    serving.server.stop().await.unwrap();
    shadow.server.stop().await.unwrap();
}

#[tokio::test]
async fn the_disagreement_sample_is_bounded_and_keeps_texts_only_when_allowed() {
    let mut shadow = shadow(true, 2).await;
    for (text, guess) in MESSAGES.iter().chain(MESSAGES) {
        shadow.client.classify(call(text, guess)).await.unwrap();
    }
    let list = shadow.client.list_disagreements(ListDisagreementsRequest { limit: 0 }).await.unwrap().into_inner();
    assert_eq!((list.seen, list.capacity, list.disagreements.len()), (6, 2, 2));
    assert_eq!(list.disagreements[0].text, MESSAGES[4].0, "newest first, text kept when allowed");
    let one = shadow.client.list_disagreements(ListDisagreementsRequest { limit: 1 }).await.unwrap().into_inner();
    assert_eq!(one.disagreements.len(), 1);
    shadow.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_reference_model_stops_start_up_with_a_clear_error() {
    let mut config = test_config("v2");
    config.reference_version = Some("v7".into());
    let err = format!("{:#}", model_service::start(config).await.err().expect("must fail"));
    assert!(err.contains("REFERENCE_VERSION") && err.contains("v7"), "{err}");
}

#[tokio::test]
async fn an_answer_stops_at_the_byte_budget_and_says_so() {
    let mut shadow = shadow(true, 300).await;
    let mut text = String::new();
    while text.len() < 1000 {
        text.push_str("Want explicit SEX in 30 secs? Ring 02073162414 now! Costs 20p/min ");
    }
    text.truncate(1000);
    for _ in 0..300 {
        shadow.client.classify(call(&text, "spam")).await.unwrap();
    }
    let all = shadow.client.list_disagreements(ListDisagreementsRequest { limit: 0 }).await.unwrap().into_inner();
    let bytes = prost::Message::encoded_len(&all);
    println!("{} of 300 kept in {bytes} bytes", all.disagreements.len());
    assert_eq!(all.seen, 300);
    assert!(all.truncated, "300 texts of 1,000 characters do not fit in one answer");
    assert!(bytes <= model_service::shadow::ANSWER_BYTES + 64, "{bytes} bytes");
    assert!((200..300).contains(&all.disagreements.len()), "{}", all.disagreements.len());
    let few = shadow.client.list_disagreements(ListDisagreementsRequest { limit: 10 }).await.unwrap().into_inner();
    assert_eq!((few.disagreements.len(), few.truncated), (10, false));
    assert_eq!(few.disagreements[..], all.disagreements[..10], "the newest first, the same entries");
    shadow.server.stop().await.unwrap();
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
