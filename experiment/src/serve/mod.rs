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
//!
//! Here the listener and its bounds; `gate` keeps and computes the verdicts, `webhook`
//! answers a call, `hooks` is Flagger's vocabulary and `logging` the gate's log lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

mod gate;
mod hooks;
mod logging;
mod webhook;

pub use gate::Gate;
use logging::log;
use webhook::webhook;

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
