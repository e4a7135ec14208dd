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
        Case {
            behaviour: Behaviour::Fail(Code::Unavailable),
            status: 503,
            outcome: "unavailable",
            says: "unavailable",
        },
        Case {
            behaviour: Behaviour::Stall(Duration::from_secs(5)),
            status: 503,
            outcome: "timeout",
            says: "unavailable",
        },
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
    // 200 invented methods add one series (method="other"); scrapes are not counted.
    assert!(series(&m) <= before + 1, "{} series after 200 invented methods (before {before})", series(&m));
    assert_eq!(
        sample(&m, "sms_requests_total", &[("method", "other"), ("route", "/sms/"), ("status", "405")]),
        Some(200.0)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn classifications_beyond_the_limit_are_refused_at_once_not_queued() {
    // The model takes 1.5 s per call; the app allows 4 classifications at a time.
    let fake = FakeModel::start(Behaviour::Stall(Duration::from_millis(1500))).await;
    let mut config = common::app_config(fake.addr, false);
    config.model_timeout = Duration::from_secs(5);
    config.max_concurrent_requests = 4;
    let app = app_service::start(config).await.unwrap();
    let http = common::http_client();
    let url = format!("http://{}/sms/", app.addr);
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = http.post(&url).json(&json!({"sms": "hello"})).send().await.unwrap();
                let retry_after = r.headers().contains_key("retry-after");
                (r.status().as_u16(), retry_after, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    println!(
        "12 at once, limit 4: {ok} answered, {} refused, slowest refusal {:?}",
        shed.len(),
        shed.iter().map(|a| a.2).max()
    );
    assert_eq!(ok + shed.len(), 12, "{answers:?}");
    assert_eq!(ok, 4, "{answers:?}");
    assert!(
        shed.iter().all(|a| a.1 && a.2 < Duration::from_millis(500)),
        "refusals must be fast, with Retry-After: {answers:?}"
    );
    // Probes and metrics are not limited while the app is busy.
    let busy = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { http.post(&url).json(&json!({"sms": "hello"})).send().await.unwrap().status().as_u16() }
    });
    let m = http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap();
    assert_eq!(m.status().as_u16(), 200);
    let m = m.text().await.unwrap();
    assert_eq!(sample(&m, "sms_requests_total", &[("route", "/sms/"), ("status", "503")]), Some(8.0), "{m}");
    assert_eq!(busy.await.unwrap(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeModel::start(Behaviour::Answer { label: "ham", spam_probability: 0.1 }).await;
    let app = app_service::start(common::app_config(fake.addr, false)).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(
        b"POST /sms/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut head = vec![0; 256];
    let n =
        tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut head)).await.expect("an answer at once").unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    println!("1 GB declared: {:?} after {:?}", head.lines().next(), started.elapsed());
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_form_that_is_not_utf8_is_refused_like_the_json_api_refuses_it() {
    let fake = FakeModel::start(Behaviour::Answer { label: "ham", spam_probability: 0.1 }).await;
    let app = app_service::start(common::app_config(fake.addr, false)).await.unwrap();
    let http = common::http_client();
    let url = format!("http://{}/sms/", app.addr);
    let form =
        http.post(&url).header("content-type", "application/x-www-form-urlencoded").body("sms=%FF%FEhello").send();
    let form = form.await.unwrap();
    assert_eq!(form.status().as_u16(), 400);
    assert!(form.text().await.unwrap().contains("not valid UTF-8"));
    let json =
        http.post(&url).header("content-type", "application/json").body(b"{\"sms\": \"\xff\xfe\"}".to_vec()).send();
    assert_eq!(json.await.unwrap().status().as_u16(), 400);
    app.stop().await.unwrap();
}

// Two workers, as the app runs on two cores: two connections to each model address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_crashes_mid_call_is_a_503_never_a_502() {
    let fake = FakeModel::start(Behaviour::Stall(Duration::from_secs(3))).await;
    let mut config = common::app_config(fake.addr, false);
    config.model_timeout = Duration::from_secs(5);
    let app = app_service::start(config).await.unwrap();
    let http = common::http_client();
    let url = format!("http://{}/sms/", app.addr);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.post(&url).json(&json!({"sms": "hello"})).send().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.crash();
    let mut statuses = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    println!("16 calls in flight when the model crashed: {statuses:?}");
    assert!(statuses.iter().all(|&(s, retry)| s == 503 && retry), "{statuses:?}");
    app.stop().await.unwrap();
}
