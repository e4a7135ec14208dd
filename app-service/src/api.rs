//! JSON endpoints: `POST /sms/` (API), `/version`, `/livez`, `/readyz`, `/metrics`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use sms_runtime::trace::SpanContext;

use crate::{
    classify::{Guess, Outcome},
    error::AppError,
    state::AppState,
};

/// The API request: `{"sms": "...", "guess": "spam" | "ham" (optional)}`. Parsed by hand
/// so every mistake gets a message naming the field.
pub struct ClassifyBody {
    pub sms: String,
    pub guess: Option<Guess>,
}

pub fn parse_json_body(body: &[u8]) -> Result<ClassifyBody, AppError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON ({e}); send {{\"sms\": \"...\"}}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(AppError::invalid(
            "the request body must be a JSON object like {\"sms\": \"...\", \"guess\": \"spam\"}",
        ));
    };
    let sms = match obj.get("sms") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(AppError::invalid("`sms` is missing: send the message text as \"sms\""));
        }
        Some(other) => return Err(AppError::invalid(format!("`sms` must be a string, got {}", kind(other)))),
    };
    let guess = match obj.get("guess") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            Guess::parse(s)
                .ok_or_else(|| AppError::invalid(format!("`guess` must be \"spam\" or \"ham\", got {s:?}")))?,
        ),
        Some(other) => {
            return Err(AppError::invalid(format!("`guess` must be \"spam\" or \"ham\", got {}", kind(other))));
        }
    };
    Ok(ClassifyBody { sms, guess })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub async fn classify_json(state: &AppState, body: &[u8], trace: &SpanContext) -> Result<Json<Value>, AppError> {
    let ClassifyBody { sms, guess } = parse_json_body(body)?;
    let Outcome { classification: c, guess, agrees, cached } = state.classifier.classify(&sms, guess, trace).await?;
    Ok(Json(json!({
        "sms": sms,
        "result": c.label,
        "guess": guess.map(Guess::as_str),
        "agrees": agrees,
        "spam_probability": c.spam_probability,
        "model_version": c.model_version,
        "model_name": c.model_name,
        "app_version": state.config.app_version,
        "cached": cached,
    })))
}

pub async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "app_version": state.config.app_version,
        "build": env!("CARGO_PKG_VERSION"),
        "cache_enabled": state.config.cache.enabled,
    }))
}

pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the model tier answers its health check: an app that cannot classify
/// should not get traffic.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.model.is_serving().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "reason": reason }))).into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

pub async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "no such page; the app lives at /sms/")
}
