//! `sms-experiment`: the verdict of the canary and shadow experiments, computed from
//! Prometheus with the decision rules of docs/experiment.md.
//!
//! Exit codes: 0 every experiment PROMOTE, 1 some KEEP RUNNING (none ROLL BACK),
//! 2 some ROLL BACK, 3 usage error, or Prometheus unreachable, refusing a query, too slow
//! (`--timeout` bounds each call, body included) or answering what cannot be trusted
//! (see `prom.rs`: a negative, NaN, infinite or absurd count, more than 4 MiB or
//! 1,000 series).
//!
//! `sms-experiment serve` answers Flagger's webhooks with the same verdict (`serve/`).

mod prom;
mod report;
mod rules;
mod serve;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: sms-experiment [options]

Reads a Prometheus HTTP API and prints, per experiment, PROMOTE, KEEP RUNNING or ROLL BACK
with each version's figures, their differences and 95 % always-valid intervals
(docs/experiment.md explains how to read them).

options:
  --prometheus URL      Prometheus base URL (default http://127.0.0.1:9090)
  --window DUR          look-back of every figure, e.g. 24h, 15m, 90s (default 24h)
  --min-samples N       least traffic on the candidate before PROMOTE (default 1000)
  --min-duration DUR    the candidate must have run this long before PROMOTE
                        (default: the window; 0 turns the check off)
  --namespace NS        only series with this namespace label (default: all)
  --baseline VERSION    stable app / serving model version (default v1)
  --candidate VERSION   canary app / shadow model version (default v2)
  --experiment WHICH    canary, shadow or both (default both)
  --timeout DUR         deadline of every Prometheus call, reading the answer
                        included (default 10s)
  --json                print JSON instead of text
  -h, --help            this text

Prometheus' answers are checked, never trusted: an answer longer than 4 MiB or with more
than 1,000 series is refused while it streams in, and every value read is a count (of
requests, calls, guesses, bucket observations), so a negative, NaN, infinite or absurd one
(above 1e15), or such a bucket bound, is an error naming the query, not a verdict.

exit codes: 0 PROMOTE (all), 1 KEEP RUNNING, 2 ROLL BACK (any), 3 error (bad option;
Prometheus unreachable, past --timeout, refusing a query or answering nonsense)

usage: sms-experiment serve [options above but --json] [serve options]

Flagger's gate: answers Flagger's webhooks, POST /webhooks/<type>, with the verdict of the
canary's namespace (the payload's; --namespace pins one and refuses others with 403).
--experiment defaults to canary here. GET /healthz answers 200.
  rollout             200 unless ROLL BACK (412)
  confirm-promotion   200 on PROMOTE, else 412
  rollback            200 on ROLL BACK (Flagger rolls back at once), else 412
  pre-rollout, post-rollout, confirm-rollout, confirm-traffic-increase, event: 200
No verdict (Prometheus failing, or past --deadline): 503. Not JSON, not Flagger's payload
or an unknown type: 400; a payload over 64 KiB: 413.

serve options:
  --listen ADDR         address to listen on (default 127.0.0.1:9810); port 0 picks a
                        free one; the bound address is printed as `listening on http://ADDR`
  --cache DUR           reuse a namespace's verdict this long (default 5s; 0: every call)
  --deadline DUR        bound on one whole verdict, every query included (default 8s,
                        under Flagger's default webhook timeout of 10s)
  --whole-window        judge every call over --window; by default a revision (Flagger's
                        checksum) is judged over the time it has run (at least 1m, at most
                        --window, and PROMOTE only after --min-duration of it), so a canary
                        tried again under the same version never inherits the last try's data";

struct Args {
    prometheus: String,
    settings: rules::Settings,
    experiments: Vec<&'static str>,
    timeout: Duration,
    json: bool,
    /// `sms-experiment serve`: Flagger's gate instead of a report.
    serve: Option<serve::Options>,
}

/// `24h`, `15m`, `90s`, `2d`, `1w` or `0`, in seconds.
fn parse_duration(text: &str) -> Result<u64> {
    if text == "0" {
        return Ok(0);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("{text:?} is not a duration like 24h or 15m"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => bail!("{text:?}: the unit must be s, m, h, d or w"),
    };
    Ok(n * scale)
}

/// Version labels go into PromQL matchers: keep them to plain names.
fn version_name(text: &str) -> Result<String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("{text:?} is not a version name like v2");
    }
    Ok(text.to_owned())
}

fn parse_args(argv: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut argv = argv.peekable();
    let serving = argv.next_if(|first| first == "serve").is_some();
    let mut prometheus = "http://127.0.0.1:9090".to_owned();
    let (mut window, mut min_duration, mut min_samples) = (86400, None, 1000.0);
    let (mut namespace, mut baseline, mut candidate) = (None, "v1".to_owned(), "v2".to_owned());
    // The gate judges the app's canary, the one Flagger drives.
    let mut experiments = if serving { vec!["canary"] } else { vec!["canary", "shadow"] };
    let (mut timeout, mut json) = (Duration::from_secs(10), false);
    let mut serve_options = serve::Options {
        listen: "127.0.0.1:9810".parse().expect("a socket address"),
        cache: Duration::from_secs(5),
        deadline: Duration::from_secs(8),
        per_revision: true,
    };
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--json" && !serving {
            json = true;
            continue;
        }
        if serving && flag == "--whole-window" {
            serve_options.per_revision = false;
            continue;
        }
        if serving && matches!(flag.as_str(), "--listen" | "--cache" | "--deadline") {
            let value = argv.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--listen" => {
                    serve_options.listen = value
                        .parse()
                        .with_context(|| format!("--listen {value:?} is not an address like 127.0.0.1:9810"))?
                }
                "--cache" => serve_options.cache = Duration::from_secs(parse_duration(&value)?),
                _ => serve_options.deadline = Duration::from_secs(parse_duration(&value)?),
            }
            continue;
        }
        let value = argv.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--prometheus" => prometheus = value,
            "--window" => window = parse_duration(&value)?,
            "--min-duration" => min_duration = Some(parse_duration(&value)?),
            "--min-samples" => min_samples = value.parse().with_context(|| format!("--min-samples {value:?}"))?,
            "--namespace" => namespace = Some(value),
            "--baseline" => baseline = version_name(&value)?,
            "--candidate" => candidate = version_name(&value)?,
            "--timeout" => timeout = Duration::from_secs(parse_duration(&value)?.max(1)),
            "--experiment" => {
                experiments = match value.as_str() {
                    "canary" => vec!["canary"],
                    "shadow" => vec!["shadow"],
                    "both" => vec!["canary", "shadow"],
                    _ => bail!("--experiment must be canary, shadow or both"),
                }
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    if window == 0 {
        bail!("--window must be longer than 0");
    }
    if serving && serve_options.deadline.is_zero() {
        bail!("--deadline must be longer than 0");
    }
    if serving && serve_options.cache > Duration::from_secs(600) {
        bail!("--cache must be at most 10m: a verdict older than that is not today's");
    }
    if let Some(ns) = &namespace
        && serving
        && !ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("--namespace {ns:?} is not a Kubernetes namespace name");
    }
    let settings = rules::Settings {
        window_secs: window,
        min_samples,
        min_duration_secs: min_duration.unwrap_or(window),
        namespace,
        baseline,
        candidate,
    };
    let serve = serving.then_some(serve_options);
    Ok(Some(Args { prometheus, settings, experiments, timeout, json, serve }))
}

async fn run(args: &Args) -> Result<Vec<rules::Experiment>> {
    let prom = prom::Prometheus::new(&args.prometheus, args.timeout)?;
    let mut out = Vec::new();
    for which in &args.experiments {
        out.push(match *which {
            "canary" => rules::canary(&prom, &args.settings).await?,
            _ => rules::shadow(&prom, &args.settings).await?,
        });
    }
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e:#}\n\n{USAGE}");
            return ExitCode::from(3);
        }
    };
    if let Some(options) = args.serve.take() {
        let gate = match prom::Prometheus::new(&args.prometheus, args.timeout) {
            Ok(prom) => serve::Gate::new(prom, args.settings, args.experiments, &options),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(3);
            }
        };
        return match serve::run(gate, options.listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    match run(&args).await {
        Ok(experiments) => {
            let w = args.settings.window_secs;
            if args.json {
                println!("{}", report::json(&experiments, w));
            } else {
                print!("{}", report::text(&experiments, w));
            }
            ExitCode::from(report::exit_code(&experiments))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn durations_and_defaults() {
        assert_eq!(parse_duration("24h").unwrap(), 86400);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert!(parse_duration("1.5h").is_err() && parse_duration("h").is_err());
        let a = args(&["--window", "15m"]).unwrap().unwrap();
        assert_eq!((a.settings.window_secs, a.settings.min_duration_secs), (900, 900));
        let a = args(&["--window", "15m", "--min-duration", "0", "--json"]).unwrap().unwrap();
        assert_eq!((a.settings.min_duration_secs, a.json), (0, true));
        assert!(args(&["--candidate", "v2\"}"]).is_err(), "labels must not break the PromQL");
        assert!(args(&["--bogus", "1"]).is_err() && args(&["--window"]).is_err());
        assert!(a.serve.is_none() && args(&["--listen", "127.0.0.1:0"]).is_err(), "serve options need serve");
    }

    #[test]
    fn serve_takes_the_clis_options_and_its_own() {
        let a = args(&["serve", "--listen", "127.0.0.1:0", "--window", "15m", "--cache", "0"]).unwrap().unwrap();
        let serve = a.serve.unwrap();
        assert_eq!((serve.listen.port(), serve.cache, serve.deadline), (0, Duration::ZERO, Duration::from_secs(8)));
        assert_eq!((a.settings.window_secs, a.experiments), (900, vec!["canary"]));
        let a = args(&["serve", "--experiment", "both", "--namespace", "sms-app"]).unwrap().unwrap();
        assert_eq!(a.experiments, vec!["canary", "shadow"]);
        assert!(args(&["serve", "--json"]).is_err(), "the gate answers Flagger, not a script");
        assert!(args(&["serve", "--listen", "localhost"]).is_err());
        assert!(args(&["serve", "--deadline", "0"]).is_err() && args(&["serve", "--cache", "1h"]).is_err());
        assert!(args(&["serve", "--namespace", "Sms\"}"]).is_err());
    }

    #[test]
    fn usage_states_the_bounds_in_force() {
        assert_eq!(prom::MAX_BODY_BYTES, 4 << 20, "update USAGE and docs/experiment.md");
        assert_eq!((prom::MAX_SERIES, prom::MAX_VALUE), (1000, 1e15), "update USAGE and docs/experiment.md");
        for text in ["4 MiB", "1,000 series", "1e15"] {
            assert!(USAGE.contains(text), "{text}");
        }
    }
}
