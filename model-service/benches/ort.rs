//! `make bench`: ONNX Runtime alone, one message a call on one thread, in this process (no
//! gRPC, no queue): what one inference worker does per call (`Model::spam_probability`:
//! the string tensor, `session.run`, the probability read back), so `cores / per-call
//! cost` is the ceiling of the model service on this machine.
//!
//! The models come from `BENCH_MODELS` (`name=dir,name=dir`; default: `models/v1` and
//! `models/v2`); each is loaded as the service loads it (the card's `onnx_sha256` must
//! match). They take turns in rounds, so a shared machine's load hits every model alike.
//! Prints a table, then one `BENCH_JSON {...}` line for `make bench`
//! (tooling/smsdev/bench/sections/ort.py).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use model_service::model::{Model, ort_environment};

/// 84 characters, normalized (the message of training/profile.py and tooling/smsdev/bench/common.py).
const MESSAGE: &str = "WINNER!! You have won a 1000 cash prize. To claim call 09061701461 now. T&C apply 18";
const ROUNDS: usize = 10;
const CALLS_PER_ROUND: usize = 300;

fn models() -> Vec<(String, PathBuf)> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    match std::env::var("BENCH_MODELS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|pair| {
                let (name, dir) = pair.split_once('=').expect("BENCH_MODELS is name=dir,name=dir");
                (name.trim().to_string(), PathBuf::from(dir.trim()))
            })
            .collect(),
        _ => ["v1", "v2"].iter().map(|v| (v.to_string(), root.join(v))).collect(),
    }
}

fn main() {
    let env = ort_environment(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(Path::new)).expect("ONNX Runtime");
    let list = models();
    let mut loaded: Vec<Model> = list
        .iter()
        .map(|(name, dir)| Model::load(&env, dir).unwrap_or_else(|e| panic!("model {name} ({}): {e}", dir.display())))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS * CALLS_PER_ROUND); list.len()];
    for _ in 0..ROUNDS {
        for (model, out) in loaded.iter_mut().zip(&mut times) {
            for _ in 0..50 {
                model.spam_probability(MESSAGE).expect("inference");
            }
            for _ in 0..CALLS_PER_ROUND {
                let started = Instant::now();
                std::hint::black_box(model.spam_probability(MESSAGE).expect("inference"));
                out.push(started.elapsed());
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\nONNX Runtime alone, one {}-character message a call, one thread ({} calls each, in rounds):",
        MESSAGE.len(),
        ROUNDS * CALLS_PER_ROUND
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>24}",
        "model",
        "median us",
        "p10 us",
        "mean us",
        format!("ceiling req/s ({cores} cores)")
    );
    let mut json = Vec::new();
    for ((name, _), t) in list.iter().zip(&mut times) {
        t.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let median = us(t[t.len() / 2]);
        let p10 = us(t[t.len() / 10]);
        let mean = t.iter().map(|d| us(*d)).sum::<f64>() / t.len() as f64;
        let ceiling = cores as f64 * 1e6 / median;
        println!("{name:<10} {median:>12.1} {p10:>12.1} {mean:>12.1} {ceiling:>24.0}");
        json.push(format!(
            r#""{name}":{{"median_us":{median:.2},"p10_us":{p10:.2},"mean_us":{mean:.2},"calls":{},"cores":{cores},"ceiling_rps":{ceiling:.0}}}"#,
            t.len()
        ));
    }
    println!("BENCH_JSON {{\"ort_alone\":{{{}}}}}", json.join(","));
}
