//! `sms-experiment serve`: the verdict as Flagger's webhook gate.
//!
//! Flagger (v1.36) POSTs `{"name","namespace","phase","checksum","metadata"}` to a webhook's
//! URL and takes 200-202 as success, anything else as failure. The payload does not say
//! which kind of hook is called, so each kind has its own path, `/webhooks/<type>`:
//!
//! - `rollout` (every analysis step; `threshold` failures roll back): 200 unless the verdict
//!   is ROLL BACK (412); KEEP RUNNING ("not enough data yet") passes.
//! - `confirm-promotion` (promotion waits for a 2xx): 200 only on PROMOTE, else 412.
//! - `rollback` (a 2xx makes Flagger roll back at once): 200 only on ROLL BACK, else 412.
//! - `pre-rollout`, `post-rollout`, `confirm-rollout`, `confirm-traffic-increase`, `event`:
//!   200, logged (an event's message, Flagger's own text, at info).
//!
//! No verdict (Prometheus down, refusing, too slow, answering nonsense, or the whole
//! verdict past `--deadline`) is 503 for every gating hook: a failed `rollout` check, a
//! promotion that keeps waiting, no rollback. The canary's namespace is the Prometheus
//! `namespace` selector of its verdict. Everything is bounded: the body (64 KiB, 413),
//! connections (64; more get 503), verdicts computed at once (4), the namespaces whose
//! verdict is kept (64, each for `--cache`), request heads (10 s) and whole requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

use crate::prom::Prometheus;
use crate::report;
use crate::rules::{self, Experiment, Verdict};

/// Largest payload read. Flagger's are a few hundred bytes (an event's message included).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections held at once; more are answered 503 and closed. Flagger is one caller.
pub const MAX_CONNECTIONS: usize = 64;
/// Verdicts computed at once (each is a handful of sequential Prometheus queries).
pub const MAX_VERDICTS_AT_ONCE: usize = 4;
/// Namespaces whose last verdict is kept for `--cache`; past this, verdicts are not kept.
pub const MAX_CACHED_NAMESPACES: usize = 64;
/// The shortest look-back of a revision's verdict: a few scrapes, so rates exist.
pub const MIN_REVISION_WINDOW_SECS: u64 = 60;
/// A connection that sends no complete request head for this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest piece of a caller's text (an event's message, a bad type) put in a log line.
const MAX_LOGGED_CHARS: usize = 300;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

pub struct Options {
    pub listen: SocketAddr,
    /// How long a namespace's verdict is reused (0: computed for every call).
    pub cache: Duration,
    /// Bound on one whole verdict (waiting for a turn and every query included).
    pub deadline: Duration,
    /// Judge each revision (Flagger's checksum) over the time it has run, not the whole
    /// --window (off: every call over --window, as the CLI does).
    pub per_revision: bool,
}

/// Flagger's webhook types (`spec.analysis.webhooks[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Rollout,
    ConfirmPromotion,
    Rollback,
    ConfirmRollout,
    ConfirmTrafficIncrease,
    PreRollout,
    PostRollout,
    Event,
}

const HOOKS: [(&str, Hook); 8] = [
    ("rollout", Hook::Rollout),
    ("confirm-promotion", Hook::ConfirmPromotion),
    ("rollback", Hook::Rollback),
    ("confirm-rollout", Hook::ConfirmRollout),
    ("confirm-traffic-increase", Hook::ConfirmTrafficIncrease),
    ("pre-rollout", Hook::PreRollout),
    ("post-rollout", Hook::PostRollout),
    ("event", Hook::Event),
];

impl Hook {
    fn parse(name: &str) -> Option<Hook> {
        HOOKS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
    }

    fn name(self) -> &'static str {
        HOOKS.iter().find(|(_, h)| *h == self).map(|(n, _)| *n).expect("every hook is listed")
    }

    /// Whether the verdict decides this hook's answer, and how: the answer is 200 when
    /// `passes(worst verdict)`.
    fn gate(self) -> Option<fn(Verdict) -> bool> {
        match self {
            Hook::Rollout => Some(|v| v != Verdict::RollBack),
            Hook::ConfirmPromotion => Some(|v| v == Verdict::Promote),
            Hook::Rollback => Some(|v| v == Verdict::RollBack),
            _ => None,
        }
    }
}

/// Flagger's `CanaryWebhookPayload`; unknown fields are ignored (later Flagger versions).
#[derive(Deserialize)]
struct Payload {
    name: String,
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

impl Payload {
    /// Names as Kubernetes allows them: they go into PromQL matchers and log lines.
    fn check(&self) -> Result<(), String> {
        let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ns = &self.namespace;
        let ns_ok = (1..=63).contains(&ns.len())
            && ns.chars().all(|c| lower(c) || c == '-')
            && ns.starts_with(lower)
            && ns.ends_with(lower);
        if !ns_ok {
            return Err(format!("namespace {:?} is not a Kubernetes namespace name", shown(ns)));
        }
        let name = &self.name;
        let name_ok = (1..=253).contains(&name.len())
            && name.chars().all(|c| lower(c) || c == '-' || c == '.')
            && name.starts_with(lower)
            && name.ends_with(lower);
        if !name_ok {
            return Err(format!("name {:?} is not a Kubernetes object name", shown(name)));
        }
        if self.phase.len() > 32 || !self.phase.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("phase {:?} is not a Flagger canary phase", shown(&self.phase)));
        }
        if self.checksum.len() > 128 || !self.checksum.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("checksum {:?} is not a Flagger checksum", shown(&self.checksum)));
        }
        Ok(())
    }
}

/// The outcome of one verdict, shared by the calls that reuse it.
type Outcome = Arc<Result<Vec<Experiment>, String>>;

struct Cached {
    at: Instant,
    outcome: Outcome,
}

/// One namespace's last verdict; its lock makes concurrent calls wait for one computation.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

pub struct Gate {
    prom: Prometheus,
    /// The CLI's settings; `namespace` set pins the gate to that namespace.
    settings: rules::Settings,
    experiments: Vec<&'static str>,
    cache: Duration,
    deadline: Duration,
    per_revision: bool,
    turns: Semaphore,
    slots: Mutex<HashMap<String, Slot>>,
    /// When each canary's current revision (Flagger's checksum) was first seen: its verdict
    /// looks back only that far, so a revision never inherits an earlier one's data under
    /// the same version label (a canary rolled back, then tried again).
    revisions: Mutex<HashMap<String, (String, Instant)>>,
}

impl Gate {
    pub fn new(prom: Prometheus, settings: rules::Settings, experiments: Vec<&'static str>, options: &Options) -> Self {
        Gate {
            prom,
            settings,
            experiments,
            cache: options.cache,
            deadline: options.deadline,
            per_revision: options.per_revision,
            turns: Semaphore::new(MAX_VERDICTS_AT_ONCE),
            slots: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
        }
    }

    /// How long this canary's revision has been under analysis (since the gate first heard
    /// of its checksum); a new checksum starts a new run.
    fn revision_age(&self, canary: &str, checksum: &str) -> Duration {
        let mut revisions = self.revisions.lock().expect("no panic holds this lock");
        if let Some((seen, since)) = revisions.get(canary)
            && seen == checksum
        {
            return since.elapsed();
        }
        if revisions.len() >= MAX_CACHED_NAMESPACES && !revisions.contains_key(canary) {
            // Forget the run heard of longest ago (bounded, as the verdict cache is).
            if let Some(oldest) = revisions.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                revisions.remove(&oldest);
            }
        }
        revisions.insert(canary.to_owned(), (checksum.to_owned(), Instant::now()));
        Duration::ZERO
    }

    /// The settings of one revision's verdict: its look-back is the time it has run (at
    /// least MIN_REVISION_WINDOW_SECS, at most --window).
    fn revision_settings(&self, namespace: &str, age: Duration) -> rules::Settings {
        let window = if self.per_revision {
            age.as_secs().max(MIN_REVISION_WINDOW_SECS).min(self.settings.window_secs)
        } else {
            self.settings.window_secs
        };
        rules::Settings { namespace: Some(namespace.to_owned()), window_secs: window, ..self.settings.clone() }
    }

    /// The namespace's verdict: reused if computed less than `cache` ago, else computed
    /// (once, however many calls wait for it).
    async fn verdict(&self, namespace: &str, revision: &str, age: Duration) -> Outcome {
        let slot = self.slot(revision);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < self.cache
        {
            return c.outcome.clone();
        }
        let outcome = Arc::new(self.compute(self.revision_settings(namespace, age)).await);
        *cached = Some(Cached { at: Instant::now(), outcome: outcome.clone() });
        outcome
    }

    fn slot(&self, namespace: &str) -> Slot {
        let mut slots = self.slots.lock().expect("no panic holds this lock");
        if let Some(slot) = slots.get(namespace) {
            return slot.clone();
        }
        if slots.len() >= MAX_CACHED_NAMESPACES {
            // Forget the verdicts that are stale and not being computed.
            slots.retain(|_, s| s.try_lock().map_or(true, |c| c.as_ref().is_some_and(|c| c.at.elapsed() < self.cache)));
        }
        let slot = Slot::default();
        if slots.len() < MAX_CACHED_NAMESPACES {
            slots.insert(namespace.to_owned(), slot.clone());
        }
        slot
    }

    async fn compute(&self, settings: rules::Settings) -> Result<Vec<Experiment>, String> {
        let _turn = self.turns.acquire().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for which in &self.experiments {
            let experiment = match *which {
                "canary" => rules::canary(&self.prom, &settings).await,
                _ => rules::shadow(&self.prom, &settings).await,
            };
            out.push(experiment.map_err(|e| format!("{e:#}"))?);
        }
        Ok(out)
    }
}

/// Serves the gate until SIGTERM or SIGINT; prints `listening on http://ADDR` once bound.
pub async fn run(gate: Gate, listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--listen {listen}"))?;
    let addr = listener.local_addr()?;
    // Whole requests, reading a slow body included; the verdict has its own deadline inside.
    let request_timeout = gate.deadline + Duration::from_secs(2);
    let app = Router::new()
        .route("/webhooks/{hook}", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(gate));
    println!("listening on http://{addr}");
    log("info", "gate listening", serde_json::json!({ "address": addr.to_string() }));

    let free = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stop = stop_requested();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    log("warn", "cannot accept a connection", serde_json::json!({ "error": err.to_string() }));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = free.clone().try_acquire_owned() else {
            let _ = tcp.try_write(BUSY);
            continue;
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
    }
    log("info", "gate stopped", serde_json::json!({}));
    Ok(())
}

async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn webhook(
    State(gate): State<Arc<Gate>>,
    Path(hook): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(hook) = Hook::parse(&hook) else {
        let known: Vec<&str> = HOOKS.iter().map(|(n, _)| *n).collect();
        let reason = format!("unknown webhook type {:?}; known: {}", shown(&hook), known.join(", "));
        return refuse(StatusCode::BAD_REQUEST, &hook, reason);
    };
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let reason = format!("the payload is over {} KiB", MAX_BODY_BYTES / 1024);
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, hook.name(), reason);
        }
        Err(e) => return refuse(e.status(), hook.name(), format!("cannot read the payload: {e}")),
    };
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, hook.name(), format!("not a Flagger webhook payload (JSON): {e}"));
        }
    };
    if let Err(e) = payload.check() {
        return refuse(StatusCode::BAD_REQUEST, hook.name(), e);
    }
    let canary = format!("{}/{}", payload.namespace, payload.name);
    if let Some(pinned) = &gate.settings.namespace
        && *pinned != payload.namespace
    {
        let reason = format!("this gate judges namespace {pinned} only (--namespace), not {}", payload.namespace);
        return refuse(StatusCode::FORBIDDEN, hook.name(), reason);
    }
    let fields = serde_json::json!({
        "hook": hook.name(),
        "canary": canary,
        "phase": payload.phase,
        "checksum": payload.checksum,
    });

    let Some(passes) = hook.gate() else {
        let mut fields = fields;
        if hook == Hook::Event {
            // Flagger's own text about the canary ("Starting canary analysis ..."), never a
            // user's message: the gate sees no message of users.
            let meta = payload.metadata.unwrap_or_default();
            let text = |key: &str| meta.get(key).map(|t| shown(t)).unwrap_or_default();
            fields["event_type"] = text("eventType").into();
            fields["event_message"] = text("eventMessage").into();
            log("info", "flagger event", fields);
        } else {
            fields["status"] = 200.into();
            log("info", "webhook", fields);
        }
        return answer(StatusCode::OK, format!("{}: nothing to decide", hook.name()));
    };

    let started = Instant::now();
    let age = gate.revision_age(&canary, &payload.checksum);
    let revision = canary_revision(&canary, &payload.checksum);
    let verdict_of_revision = gate.verdict(&payload.namespace, &revision, age);
    let (status, verdict, text) = match tokio::time::timeout(gate.deadline, verdict_of_revision).await {
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("no verdict within the deadline of {} s (--deadline)", gate.deadline.as_secs_f64()),
        ),
        Ok(outcome) => match outcome.as_ref() {
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, None, format!("no verdict: {e}")),
            Ok(experiments) => {
                let mut worst = experiments.iter().map(|e| e.verdict).max().unwrap_or(Verdict::Promote);
                let mut text = report::summary(experiments);
                let min_duration = Duration::from_secs(gate.settings.min_duration_secs);
                if gate.per_revision && worst == Verdict::Promote && age < min_duration {
                    // the version label may have run before; this revision must run itself
                    worst = Verdict::KeepRunning;
                    text = format!(
                        "KEEP RUNNING: this revision has run {} s of the {} s --min-duration\n{text}",
                        age.as_secs(),
                        min_duration.as_secs()
                    );
                }
                let status = if passes(worst) { StatusCode::OK } else { StatusCode::PRECONDITION_FAILED };
                (status, Some(report::verdict_name(worst)), text)
            }
        },
    };
    let mut fields = fields;
    fields["status"] = status.as_u16().into();
    fields["verdict"] = verdict.into();
    fields["seconds"] = (started.elapsed().as_millis() as f64 / 1000.0).into();
    let level = if status == StatusCode::SERVICE_UNAVAILABLE { "warn" } else { "info" };
    if verdict.is_none() {
        fields["error"] = shown(&text).into();
    }
    log(level, "webhook", fields);
    answer(status, text)
}

/// The key of one revision of one canary (its verdicts are cached apart).
fn canary_revision(canary: &str, checksum: &str) -> String {
    format!("{canary}@{checksum}")
}

/// A refused call: logged (the reason only, cut short), answered with the reason.
fn refuse(status: StatusCode, hook: &str, reason: String) -> Response {
    log(
        "warn",
        "webhook refused",
        serde_json::json!({ "hook": shown(hook), "status": status.as_u16(), "reason": shown(&reason) }),
    );
    answer(status, reason)
}

fn answer(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// A caller's text cut to [`MAX_LOGGED_CHARS`] characters.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_LOGGED_CHARS).collect();
    if text.chars().nth(MAX_LOGGED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// One JSON log line on stderr (stdout holds the bound address for whoever started us).
fn log(level: &str, msg: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({ "level": level, "msg": msg });
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(namespace: &str, name: &str) -> Payload {
        Payload {
            name: name.into(),
            namespace: namespace.into(),
            phase: "Progressing".into(),
            checksum: "abc123".into(),
            metadata: None,
        }
    }

    fn gate(per_revision: bool) -> Gate {
        let settings = rules::Settings {
            window_secs: 600,
            min_samples: 10.0,
            min_duration_secs: 60,
            namespace: None,
            baseline: "v1".into(),
            candidate: "v2".into(),
        };
        let options = Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            cache: Duration::ZERO,
            deadline: Duration::from_secs(1),
            per_revision,
        };
        let prom = Prometheus::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
        Gate::new(prom, settings, vec!["canary"], &options)
    }

    #[test]
    fn a_revision_is_judged_over_the_time_it_has_run() {
        let g = gate(true);
        assert_eq!(g.revision_age("ns/app", "aaa"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        let age = g.revision_age("ns/app", "aaa");
        assert!(age >= Duration::from_millis(20), "the same checksum keeps its start: {age:?}");
        assert_eq!(g.revision_age("ns/app", "bbb"), Duration::ZERO, "a new checksum is a new run");
        // its look-back: at least a minute, at most --window
        assert_eq!(g.revision_settings("ns", Duration::from_secs(5)).window_secs, MIN_REVISION_WINDOW_SECS);
        assert_eq!(g.revision_settings("ns", Duration::from_secs(300)).window_secs, 300);
        assert_eq!(g.revision_settings("ns", Duration::from_secs(9000)).window_secs, 600);
        assert_eq!(gate(false).revision_settings("ns", Duration::from_secs(5)).window_secs, 600);
        // bounded: past MAX_CACHED_NAMESPACES canaries the oldest run is forgotten
        for i in 0..MAX_CACHED_NAMESPACES + 5 {
            g.revision_age(&format!("ns/app{i}"), "c");
        }
        assert!(g.revisions.lock().unwrap().len() <= MAX_CACHED_NAMESPACES);
    }

    #[test]
    fn hook_names_round_trip_and_gates_answer_as_documented() {
        for (name, hook) in HOOKS {
            assert_eq!(Hook::parse(name), Some(hook));
            assert_eq!(hook.name(), name);
        }
        assert_eq!(Hook::parse("Rollout"), None);
        let rollout = Hook::Rollout.gate().unwrap();
        assert!(rollout(Verdict::Promote) && rollout(Verdict::KeepRunning) && !rollout(Verdict::RollBack));
        let promotion = Hook::ConfirmPromotion.gate().unwrap();
        assert!(promotion(Verdict::Promote) && !promotion(Verdict::KeepRunning) && !promotion(Verdict::RollBack));
        let rollback = Hook::Rollback.gate().unwrap();
        assert!(!rollback(Verdict::Promote) && !rollback(Verdict::KeepRunning) && rollback(Verdict::RollBack));
        for hook in [Hook::Event, Hook::PreRollout, Hook::PostRollout, Hook::ConfirmRollout] {
            assert!(hook.gate().is_none());
        }
        assert!(Hook::ConfirmTrafficIncrease.gate().is_none());
    }

    #[test]
    fn payload_names_must_be_kubernetes_names() {
        assert!(payload("sms-app", "sms-app-app").check().is_ok());
        for (ns, name) in [
            ("", "app"),
            ("Sms", "app"),
            ("sms\"}", "app"),
            ("-sms", "app"),
            (&"a".repeat(64), "app"),
            ("sms", ""),
            ("sms", "app\n"),
        ] {
            assert!(payload(ns, name).check().is_err(), "{ns:?} {name:?}");
        }
        let mut p = payload("sms", "app");
        p.phase = "Progressing\"".into();
        assert!(p.check().is_err());
    }

    #[test]
    fn long_texts_are_cut_for_logs() {
        assert_eq!(shown("short"), "short");
        let long = "x".repeat(1000);
        assert_eq!(shown(&long).chars().count(), MAX_LOGGED_CHARS + 1);
    }
}
