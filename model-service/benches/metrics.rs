//! `make bench`: what recording one Classify call's metrics costs, through the previous
//! pipeline (the `prometheus` crate's label vectors, as the service did before metrics moved
//! to OpenTelemetry) and through the service's own `Metrics` (OpenTelemetry API, exported
//! by opentelemetry-prometheus), measured in the same run on the same thread.
//!
//! One call records: in-flight up and down, one prediction by result, one inference time,
//! one answered call by gRPC code; then the page is rendered once per 10,000 calls (a
//! scrape every 15 s at ~700 calls/s). The same call again with the drift histograms
//! (spam probability and input length, `Metrics::scored`) measures what they add, in the
//! same run. Prints a table, then one `BENCH_JSON {...}` line for `make bench`
//! (tooling/smsdev/bench/sections/ort.py).

use std::{hint::black_box, time::Instant};

use model_service::metrics::{INFERENCE_BUCKETS, Metrics};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

const CALLS: u32 = 1_000_000;
const SCRAPE_EVERY: u32 = 10_000;

fn before() -> f64 {
    let registry = Registry::new();
    let labels = &["version", "source"];
    let predictions =
        IntCounterVec::new(Opts::new("sms_model_predictions_total", "h"), &["version", "source", "result"]).unwrap();
    let requests =
        IntCounterVec::new(Opts::new("sms_model_requests_total", "h"), &["version", "source", "code"]).unwrap();
    let inflight = IntGaugeVec::new(Opts::new("sms_model_inflight_requests", "h"), labels).unwrap();
    let seconds = HistogramVec::new(
        HistogramOpts::new("sms_model_inference_seconds", "h").buckets(INFERENCE_BUCKETS.to_vec()),
        labels,
    )
    .unwrap();
    registry.register(Box::new(predictions.clone())).unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    registry.register(Box::new(inflight.clone())).unwrap();
    registry.register(Box::new(seconds.clone())).unwrap();
    let started = Instant::now();
    for i in 0..CALLS {
        let g = inflight.with_label_values(&["v1", "app"]);
        g.inc();
        predictions.with_label_values(&["v1", "app", if i % 7 == 0 { "spam" } else { "ham" }]).inc();
        seconds.with_label_values(&["v1", "app"]).observe(0.00015);
        g.dec();
        requests.with_label_values(&["v1", "app", &format!("{:?}", tonic::Code::Ok)]).inc();
        if i % SCRAPE_EVERY == 0 {
            let mut buf = Vec::new();
            TextEncoder::new().encode(&registry.gather(), &mut buf).unwrap();
            black_box(buf);
        }
    }
    started.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

/// `with_drift`: also the two drift histograms, with probabilities and lengths that move
/// across their buckets as real ones do.
fn after(with_drift: bool) -> f64 {
    let metrics = Metrics::new("v1", "app", None, None);
    let started = Instant::now();
    for i in 0..CALLS {
        let inflight = metrics.in_flight();
        metrics.predicted(model_service::metrics::Protocol::Sms, i % 7 == 0, 0.00015);
        if with_drift {
            let spam_probability = black_box((i % 101) as f32 / 100.0);
            metrics.scored(model_service::metrics::Protocol::Sms, spam_probability, black_box((i % 400) as usize));
        }
        drop(inflight);
        metrics.answered(tonic::Code::Ok);
        if i % SCRAPE_EVERY == 0 {
            black_box(metrics.render());
        }
    }
    started.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    // Alternate and keep the best of three, so neither side pays for a cold cache alone.
    let (mut b, mut a, mut d) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        b = b.min(before());
        a = a.min(after(false));
        d = d.min(after(true));
    }
    println!("\nmetrics recorded per Classify call (one thread, {CALLS} calls, best of 3):");
    println!("{:<52} {:>10}", "pipeline", "ns/call");
    println!("{:<52} {:>10.0}", "before: prometheus crate label vectors", b);
    println!("{:<52} {:>10.0}", "after: OpenTelemetry API -> opentelemetry-prometheus", a);
    println!("{:<52} {:>10.0}", "after + drift histograms (probability, input length)", d);
    // Against the ~150 us a v1 call costs end to end on this kind of machine.
    println!("difference: {:+.0} ns/call, {:+.2} % of a 150 us call", a - b, (a - b) / 150_000.0 * 100.0);
    println!("drift histograms: {:+.0} ns/call, {:+.2} % of a 150 us call", d - a, (d - a) / 150_000.0 * 100.0);
    // For `make bench`, which puts it into bench.json.
    println!(
        r#"BENCH_JSON {{"metrics_per_call_ns":{{"prometheus_before":{b:.1},"opentelemetry_after":{a:.1},"with_drift_histograms":{d:.1},"drift_histograms":{:.1},"calls":{CALLS}}}}}"#,
        d - a
    );
}
