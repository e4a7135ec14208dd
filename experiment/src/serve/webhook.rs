//! One webhook call: the payload read and checked, the verdict of the canary's revision
//! (within `--deadline`) turned into the hook's answer, and the call logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{
    Gate, MAX_BODY_BYTES,
    hooks::{HOOKS, Hook, Payload},
    logging::{log, shown},
};
use crate::report;
use crate::rules::Verdict;

pub(super) async fn webhook(
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
