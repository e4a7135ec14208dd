//! `app-service pre-stop-delay SECONDS`, the preStop hook the chart uses under Flagger:
//! the real binary waits the given time and exits 0; a bad or unbounded value is refused
//! at once with the usage, so a pod's termination is never held by a typo.

use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_app-service")).args(args).output().expect("run app-service");
    (out, start.elapsed())
}

#[test]
fn pre_stop_delay_waits_then_exits_zero() {
    let (out, took) = run(&["pre-stop-delay", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(took >= Duration::from_secs(1), "returned after {took:?}");
}

#[test]
fn pre_stop_delay_refuses_what_is_not_a_bounded_number_of_seconds() {
    for bad in [&["pre-stop-delay"][..], &["pre-stop-delay", "five"], &["pre-stop-delay", "301"]] {
        let (out, took) = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: app-service pre-stop-delay"), "{bad:?}");
        assert!(took < Duration::from_secs(5), "{bad:?} took {took:?}");
    }
}
