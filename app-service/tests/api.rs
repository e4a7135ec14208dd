//! The app's HTTP API against the real model service over gRPC on loopback.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{HAM, SPAM, TestApp, sample};
use serde_json::json;

#[tokio::test]
async fn classifies_spam_and_ham_and_echoes_the_guess() {
    let t = TestApp::start(false).await;
    let (status, body) = t.post_json(json!({"sms": SPAM, "guess": "spam"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "spam");
    assert_eq!(body["sms"], SPAM);
    assert_eq!(body["guess"], "spam");
    assert_eq!(body["agrees"], true);
    assert!(body["spam_probability"].as_f64().unwrap() > 0.5);
    assert_eq!(body["model_version"], "v1");
    assert_eq!(body["app_version"], "v1");
    assert_eq!(body["cached"], false);

    let (status, body) = t.post_json(json!({"sms": HAM, "guess": "spam"})).await;
    assert_eq!(status, 200);
    assert_eq!((body["result"].as_str(), body["agrees"].as_bool()), (Some("ham"), Some(false)));

    let (status, body) = t.post_json(json!({"sms": HAM})).await;
    assert_eq!(status, 200);
    assert!(body["guess"].is_null() && body["agrees"].is_null());

    let m = t.metrics().await;
    let v1 = ("version", "v1");
    assert_eq!(sample(&m, "sms_messages_classified_total", &[v1, ("result", "spam")]), Some(1.0));
    assert_eq!(sample(&m, "sms_messages_classified_total", &[v1, ("result", "ham")]), Some(2.0));
    assert_eq!(sample(&m, "sms_guesses_total", &[v1, ("agreement", "agree")]), Some(1.0));
    assert_eq!(sample(&m, "sms_guesses_total", &[v1, ("agreement", "disagree")]), Some(1.0));
    assert_eq!(sample(&m, "sms_model_calls_total", &[v1, ("outcome", "ok")]), Some(3.0));
    let ok_posts = [v1, ("method", "POST"), ("route", "/sms/"), ("status", "200")];
    assert_eq!(sample(&m, "sms_requests_total", &ok_posts), Some(3.0));
    // None in progress: the scrape reading this is not a user's request.
    assert_eq!(sample(&m, "sms_active_requests", &[v1]), Some(0.0));
    assert_eq!(sample(&m, "sms_request_latency_seconds_count", &[v1, ("route", "/sms/")]), Some(3.0));
    assert_eq!(sample(&m, "sms_app_info", &[v1, ("cache_enabled", "false")]), Some(1.0));
    // The guesses travel with the model calls, so the model counts them too.
    let model = t.model_metrics().await;
    assert_eq!(sample(&model, "sms_model_guesses_total", &[("agreement", "agree")]), Some(1.0));
    assert_eq!(sample(&model, "sms_model_guesses_total", &[("agreement", "disagree")]), Some(1.0));
    t.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_json_error() {
    let t = TestApp::start(false).await;
    let long = "a".repeat(1001);
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (json!({"sms": ""}), 422, "empty"),
        (json!({"sms": "   \n\t"}), 422, "empty"),
        (json!({"sms": long}), 422, "limit is 1000"),
        (json!({"sms": 5}), 422, "`sms` must be a string, got a number"),
        (json!({"sms": ["a"]}), 422, "`sms` must be a string, got an array"),
        (json!({"text": "hello"}), 422, "`sms` is missing"),
        (json!({"sms": "hello", "guess": "maybe"}), 422, "`guess` must be \"spam\" or \"ham\""),
        (json!({"sms": "hello", "guess": true}), 422, "`guess` must be \"spam\" or \"ham\", got a boolean"),
        (json!(["sms"]), 422, "JSON object"),
    ];
    for (body, want_status, want_message) in cases {
        let (status, answer) = t.post_json(body.clone()).await;
        assert_eq!(status, want_status, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(want_message), "{body}: {error}");
        assert_eq!(answer["status"], want_status);
    }

    let raw = |body: &'static str, content_type: &'static str| {
        let req = t.http.post(t.url("/sms/")).header("content-type", content_type).body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (status, ct, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, ct, body) = raw("{\"sms\": ", "application/json").await;
    assert_eq!((status, ct.as_str()), (400, "application/json"));
    assert!(body["error"].as_str().unwrap().contains("not valid JSON"), "{body}");
    let (status, _, body) = raw("sms=hi", "text/plain").await;
    assert_eq!(status, 415);
    assert!(body["error"].as_str().unwrap().contains("application/json"), "{body}");

    let big = "x".repeat(20 * 1024);
    let r = t.http.post(t.url("/sms/")).json(&json!({"sms": big})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().contains("larger than"));

    let r = t.http.get(t.url("/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());

    // None of these reached the model.
    let m = t.metrics().await;
    assert_eq!(sample(&m, "sms_model_calls_total", &[("outcome", "ok")]), Some(0.0));
    t.stop().await;
}

#[tokio::test]
async fn pages_and_operational_endpoints() {
    let t = TestApp::start(false).await;
    let r = t.http.get(t.url("/")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/sms/");

    let r = t.http.get(t.url("/sms/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    assert!(html.contains("<label for=\"sms\">") && html.contains("id=\"app-version\">v1<"));

    let r = t.http.get(t.url("/static/app.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));

    // Compressed when the client asks and the body is worth it (the page); an API answer
    // (~200 bytes) goes as it is, with its length.
    let r = t.http.get(t.url("/sms/")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.bytes().await.unwrap()[..2], [0x1f, 0x8b], "a gzip stream");
    let r =
        t.http.post(t.url("/sms/")).header("accept-encoding", "gzip").json(&json!({"sms": HAM})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("content-encoding").is_none(), "{:?}", r.headers());
    let length: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert!(length < 1024, "{length}");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["result"], "ham");

    let version: serde_json::Value = t.http.get(t.url("/version")).send().await.unwrap().json().await.unwrap();
    assert_eq!(version["app_version"], "v1");
    assert_eq!(version["cache_enabled"], false);

    assert_eq!(t.http.get(t.url("/livez")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status().as_u16(), 200);

    // A caller's trace is continued (same trace id), and the id is handed back.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = t.http.get(t.url("/version")).header("traceparent", parent).send().await.unwrap();
    assert_eq!(r.headers()["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    // Scrapes and probes are answered (and traced) but are not users' requests: the request
    // metrics count users' routes only, so queries over them need no route selector.
    let m = t.metrics().await;
    for route in ["/metrics", "/livez", "/readyz"] {
        assert!(!m.contains(&format!("route=\"{route}\"")), "{route} in the request metrics:\n{m}");
    }
    assert_eq!(
        sample(&m, "sms_requests_total", &[("method", "GET"), ("route", "/version"), ("status", "200")]),
        Some(2.0)
    );
    t.stop().await;
}

// Two workers, as the app runs on two cores: two connections to each model address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_down_is_a_quick_503_and_the_app_recovers_when_it_returns() {
    let mut t = TestApp::start(false).await;
    let (status, _) = t.post_json(json!({"sms": SPAM})).await;
    assert_eq!(status, 200);

    t.model.take().unwrap().stop().await.unwrap();
    let started = Instant::now();
    let (status, body) = t.post_json(json!({"sms": SPAM})).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unavailable"), "{body}");
    assert!(took < Duration::from_millis(1500), "503 took {took:?} (deadline 500 ms)");
    let r = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let reason: serde_json::Value = r.json().await.unwrap();
    assert!(reason["reason"].is_string(), "{reason}");
    // The UI says so too, without JavaScript.
    let r = t.http.post(t.url("/sms/")).form(&[("sms", SPAM), ("guess", "")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("model service is unavailable"));

    // The model comes back on the same address; the app reconnects by itself.
    t.model = Some(common::start_model(t.model_addr).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = t.post_json(json!({"sms": SPAM})).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the app did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status().as_u16(), 200);
    let m = t.metrics().await;
    let failed = sample(&m, "sms_model_calls_total", &[("outcome", "unavailable")]).unwrap()
        + sample(&m, "sms_model_calls_total", &[("outcome", "timeout")]).unwrap();
    assert!(failed >= 2.0, "{m}");
    t.stop().await;
}

#[tokio::test]
async fn cache_on_answers_repeats_without_calling_the_model() {
    let t = TestApp::start(true).await;
    for i in 0..5 {
        let (status, body) = t.post_json(json!({"sms": SPAM})).await;
        assert_eq!(status, 200);
        assert_eq!(body["cached"], i > 0, "request {i}");
        assert_eq!(body["result"], "spam");
    }
    // Whitespace variants are the same message to the model, so they hit too.
    let (_, body) = t.post_json(json!({"sms": format!("  {SPAM}\n")})).await;
    assert_eq!(body["cached"], true);
    let model = t.model_metrics().await;
    assert_eq!(sample(&model, "sms_model_predictions_total", &[("result", "spam"), ("protocol", "sms")]), Some(1.0));
    let m = t.metrics().await;
    assert_eq!(sample(&m, "sms_cache_hits_total", &[("version", "v2")]), Some(5.0));
    assert_eq!(sample(&m, "sms_cache_misses_total", &[("version", "v2")]), Some(1.0));
    assert_eq!(sample(&m, "sms_model_calls_total", &[("version", "v2"), ("outcome", "ok")]), Some(1.0));
    assert_eq!(sample(&m, "sms_messages_classified_total", &[("version", "v2"), ("result", "spam")]), Some(6.0));
    t.stop().await;
}

#[tokio::test]
async fn cache_off_sends_every_request_to_the_model() {
    let t = TestApp::start(false).await;
    for _ in 0..5 {
        let (_, body) = t.post_json(json!({"sms": SPAM})).await;
        assert_eq!(body["cached"], false);
    }
    let model = t.model_metrics().await;
    assert_eq!(sample(&model, "sms_model_predictions_total", &[("result", "spam"), ("protocol", "sms")]), Some(5.0));
    let m = t.metrics().await;
    assert_eq!(sample(&m, "sms_cache_hits_total", &[("version", "v1")]), Some(0.0));
    t.stop().await;
}

// Two workers, as the app runs on two cores: two connections to each model address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_spread_over_every_model_address_and_follow_changes() {
    // Two real model servers behind one name, as a headless Service gives the app.
    let a = common::start_model("127.0.0.1:0".parse().unwrap()).await;
    let b = common::start_model("127.0.0.1:0".parse().unwrap()).await;
    let addresses = Arc::new(Mutex::new(vec![a.grpc_addr, b.grpc_addr]));
    let every = Duration::from_millis(100);
    let app = common::start_app_over_replicas(addresses.clone(), every).await;
    let http = common::http_client();
    let classify = |n: usize| {
        let (http, url) = (http.clone(), format!("http://{}/sms/", app.addr));
        async move {
            for _ in 0..n {
                let r = http.post(&url).json(&json!({"sms": SPAM})).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        }
    };
    let count = |addr| common::spam_predictions(&http, addr);
    classify(40).await;
    let (ca, cb) = (count(a.metrics_addr).await, count(b.metrics_addr).await);
    assert_eq!(ca + cb, 40.0);
    assert!(ca >= 5.0 && cb >= 5.0, "not balanced: {ca} / {cb}");

    // b leaves the set (pod deleted): after the next resolution nothing goes to it.
    addresses.lock().unwrap().retain(|x| *x == a.grpc_addr);
    tokio::time::sleep(every * 4).await;
    classify(20).await;
    assert_eq!(count(b.metrics_addr).await, cb);
    assert_eq!(count(a.metrics_addr).await, ca + 20.0);
    app.stop().await.unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A rolling restart of a model Deployment behind a headless Service: one replica shuts
/// down (GOAWAY, then its port closes) while the name still lists it. The app notices the
/// GOAWAY, finds the address refusing connections and sends every call to the replica
/// that is left, so no user sees the restart.
// Two workers, as the app runs on two cores: two connections to each model address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_replica_that_shuts_down_costs_no_request_while_another_serves() {
    let a = common::start_model("127.0.0.1:0".parse().unwrap()).await;
    let b = common::start_model("127.0.0.1:0".parse().unwrap()).await;
    let addresses = Arc::new(Mutex::new(vec![a.grpc_addr, b.grpc_addr]));
    let app = common::start_app_over_replicas(addresses, Duration::from_secs(60)).await;
    let http = common::http_client();
    let url = format!("http://{}/sms/", app.addr);
    let classify = async || http.post(&url).json(&json!({"sms": SPAM})).send().await.unwrap().status().as_u16();
    for _ in 0..4 {
        assert_eq!(classify().await, 200);
    }

    let b_metrics = b.metrics_addr;
    a.stop().await.unwrap();
    // The GOAWAY and the closed port reach the app's connection task at once; a real
    // rollout removes the pod from the Service seconds before that.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..20 {
        *statuses.entry(classify().await).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 20)].into(), "statuses after one of two model replicas stopped");
    let served_by_b = common::spam_predictions(&http, b_metrics).await;
    assert!(served_by_b >= 20.0, "the replica left served {served_by_b} of the 20");
    app.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A model connection's first calls go out before the model's SETTINGS (32 streams a
/// connection) arrive, so a burst on a fresh connection has streams refused by the
/// protocol (REFUSED_STREAM). The model never saw those calls; the app sends them again
/// rather than answering its users 503 after every model restart.
// Two workers, as the app runs on two cores: two connections to each model address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_fresh_model_connection_is_answered_in_full() {
    let t = TestApp::start(false).await;
    let calls = (0..64).map(|i| {
        let (http, url) = (t.http.clone(), t.url("/sms/"));
        tokio::spawn(async move {
            let r = http.post(url).json(&json!({"sms": format!("{HAM} {i}")})).send().await.unwrap();
            r.status().as_u16()
        })
    });
    let mut statuses = std::collections::BTreeMap::new();
    for call in calls.collect::<Vec<_>>() {
        *statuses.entry(call.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 64)].into(), "statuses of a 64-call burst");
    let m = t.metrics().await;
    assert_eq!(sample(&m, "sms_model_calls_total", &[("outcome", "ok")]), Some(64.0));
    t.stop().await;
}
