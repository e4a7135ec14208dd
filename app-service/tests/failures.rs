//! How the app answers when the model tier misbehaves: each failure a clear status (never
//! a hang), counted under the right outcome, without ONNX Runtime (an in-process fake).

mod common;

use std::time::{Duration, Instant};

use common::{
    fake_model::{Behaviour, FakeModel},
    sample,
};
use serde_json::json;
use tonic::Code;

struct Case {
    behaviour: Behaviour,
    status: u16,
    outcome: &'static str,
    says: &'static str,
}

#[tokio::test]
async fn every_model_failure_gets_a_clear_status_and_is_counted() {
    let cases = [
        Case { behaviour: Behaviour::Fail(Code::InvalidArgument), status: 422, outcome: "error", says: "told to fail" },
        Case { behaviour: Behaviour::Fail(Code::Unavailable), status: 503, outcome: "unavailable", says: "unavailable" },
        Case { behaviour: Behaviour::Stall(Duration::from_secs(5)), status: 503, outcome: "timeout", says: "unavailable" },
        Case { behaviour: Behaviour::Fail(Code::Internal), status: 502, outcome: "error", says: "failed to classify" },
        Case {
            behaviour: Behaviour::Answer { label: "maybe", spam_probability: 0.5 },
            status: 502,
            outcome: "error",
            says: "failed to classify",
        },
        Case {
            behaviour: Behaviour::Answer { label: "spam", spam_probability: f32::NAN },
            status: 502,
            outcome: "error",
            says: "failed to classify",
        },
    ];
    let fake = FakeModel::start(Behaviour::Answer { label: "spam", spam_probability: 0.9 }).await;
    let app = app_service::start(common::app_config(fake.addr, false)).await.unwrap();
    let http = common::http_client();
    let url = format!("http://{}/sms/", app.addr);

    let r = http.post(&url).json(&json!({"sms": "hello", "guess": "spam"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    for case in cases {
        fake.behave(case.behaviour.clone());
        let before = counted(&http, app.addr, case.outcome).await;
        let started = Instant::now();
        let r = http.post(&url).json(&json!({"sms": "hello"})).send().await.unwrap();
        let took = started.elapsed();
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = r.json().await.unwrap();
        println!("{:?}: {status} in {took:?}, {body}", case.behaviour);
        assert_eq!(status, case.status, "{:?}: {body}", case.behaviour);
        assert!(body["error"].as_str().unwrap().contains(case.says), "{:?}: {body}", case.behaviour);
        assert_eq!(retry_after.is_some(), status == 503, "{:?}: Retry-After only on 503", case.behaviour);
        assert!(took < Duration::from_millis(1500), "{:?} took {took:?} (deadline 500 ms)", case.behaviour);
        assert_eq!(counted(&http, app.addr, case.outcome).await, before + 1.0, "{:?}", case.behaviour);
    }
    app.stop().await.unwrap();
}

async fn counted(http: &reqwest::Client, addr: std::net::SocketAddr, outcome: &str) -> f64 {
    let m = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    sample(&m, "sms_model_calls_total", &[("outcome", outcome)]).unwrap()
}

#[tokio::test]
async fn invented_http_methods_do_not_grow_the_metrics() {
    let fake = FakeModel::start(Behaviour::Answer { label: "ham", spam_probability: 0.1 }).await;
    let app = app_service::start(common::app_config(fake.addr, false)).await.unwrap();
    let http = common::http_client();
    let series = |m: &str| m.lines().filter(|l| l.starts_with("sms_requests_total{")).count();
    let before = series(&http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap());
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        let r = http.request(method, format!("http://{}/sms/", app.addr)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
    }
    let m = http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
    // 200 invented methods add one series (method="other"), plus the /metrics scrape.
    assert!(series(&m) <= before + 2, "{} series after 200 invented methods (before {before})", series(&m));
    assert_eq!(sample(&m, "sms_requests_total", &[("method", "other"), ("route", "/sms/"), ("status", "405")]), Some(200.0));
    app.stop().await.unwrap();
}
