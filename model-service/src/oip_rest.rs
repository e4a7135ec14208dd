//! The Open Inference Protocol's HTTP/JSON form on its own port (INFERENCE_HTTP_ADDR):
//! `/v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/sms-spam[/versions/<v>]`,
//! `.../ready` and `.../infer`, with the protocol's JSON tensors and error body
//! `{"error": "..."}`. Triton's binary tensor extension (`Inference-Header-Content-Length`,
//! `binary_data_size`, `binary_data`) is understood both ways, since tritonclient sends and
//! asks for binary tensors by default. A refusal is the HTTP form of `sms.v1`'s: 400 bad
//! input, 404 unknown model or version, 413 a body over 1 MiB, 503 with Retry-After when
//! overloaded, 504 past the deadline.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sms_runtime::trace::{self, Headers};
use tonic::{Code, Status};

use crate::{
    metrics::Protocol,
    oip::{
        GUESS_PARAMETER, INPUT, MAX_REQUEST_BYTES, MODEL_NAME, Oip, Output, check_input, one_input_expected,
        split_raw_bytes, text_of_row,
    },
    service::{Answers, parse_guess},
};

/// The header of Triton's binary tensor extension: the length of the JSON part.
const HEADER_LENGTH: &str = "inference-header-content-length";

pub fn router(oip: Arc<Oip>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { Json(json!({"ready": true})) }))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_of_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_of_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_of_version))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint: the protocol's are under /v2") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here: infer is POST, the rest GET")
        })
        .with_state(oip)
}

/// A JSON body (serde_json straight into the response, no extractor needed).
struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0.to_string()).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The HTTP answer to a refusal of the serving path (its gRPC code, as sms.v1 has it).
fn refused(status: &Status) -> Response {
    let code = match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = error(code, status.message());
    if code == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn server_metadata(State(oip): State<Arc<Oip>>) -> Response {
    let m = oip.server_metadata();
    Json(json!({"name": m.name, "version": m.version, "extensions": m.extensions})).into_response()
}

fn metadata(oip: &Oip, name: &str, version: &str) -> Response {
    if let Err(s) = oip.check_model(name, version) {
        return refused(&s);
    }
    let m = oip.model_metadata();
    let tensors = |ts: &[sms_proto::inference::model_metadata_response::TensorMetadata]| {
        ts.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect::<Vec<_>>()
    };
    Json(json!({
        "name": m.name, "versions": m.versions, "platform": m.platform,
        "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs),
    }))
    .into_response()
}

async fn model_metadata(State(oip): State<Arc<Oip>>, Path(name): Path<String>) -> Response {
    metadata(&oip, &name, "")
}

async fn model_metadata_of_version(
    State(oip): State<Arc<Oip>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&oip, &name, &version)
}

fn ready(oip: &Oip, name: &str, version: &str) -> Response {
    match oip.check_model(name, version) {
        Ok(()) => Json(json!({"name": MODEL_NAME, "ready": true})).into_response(),
        Err(s) => refused(&s),
    }
}

async fn model_ready(State(oip): State<Arc<Oip>>, Path(name): Path<String>) -> Response {
    ready(&oip, &name, "")
}

async fn model_ready_of_version(
    State(oip): State<Arc<Oip>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    ready(&oip, &name, &version)
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn infer(State(oip): State<Arc<Oip>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    infer_version(oip, name, String::new(), headers, body).await
}

async fn infer_of_version(
    State(oip): State<Arc<Oip>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_version(oip, name, version, headers, body).await
}

async fn infer_version(oip: Arc<Oip>, name: String, version: String, headers: HeaderMap, body: Body) -> Response {
    if let Err(s) = oip.check_model(&name, &version) {
        return refused(&s);
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is over {MAX_REQUEST_BYTES} bytes, the most a call may send"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return too_large();
    };
    let (texts, binary_out, wanted, request) = match decode(&oip, &headers, &body) {
        Ok(decoded) => decoded,
        Err(s) => return refused(&s),
    };
    let guess = parse_guess(request.parameters.get(GUESS_PARAMETER).and_then(Value::as_str))
        .or_else(|| parse_guess(headers.get(sms_proto::GUESS_METADATA).and_then(|v| v.to_str().ok())));
    let parent = trace::extract(&Headers(&headers));
    let answers = match oip.infer(texts, guess, parent, oip.serving.request_timeout, Protocol::OipRest).await {
        Ok(a) => a,
        Err(s) => return refused(&s),
    };
    encode(&oip, request.id, &wanted, &binary_out, &answers)
}

/// The request's rows (validated), which outputs go binary, the outputs wanted, and the
/// parsed JSON part.
#[allow(clippy::type_complexity)]
fn decode(
    oip: &Oip,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Vec<String>, Vec<bool>, Vec<Output>, InferRequest), Status> {
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n = v.to_str().ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n <= body.len());
            n.ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{HEADER_LENGTH} must be the length of the JSON part, at most the body's {} bytes",
                    body.len()
                ))
            })?
        }
        None => body.len(),
    };
    let (json_part, mut binary) = body.split_at(json_len);
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| Status::invalid_argument(format!("the body is not an inference request: {e}")))?;
    let [input] = &request.inputs[..] else {
        return Err(one_input_expected(request.inputs.len()));
    };
    let n = check_input(oip, &input.name, &input.datatype, &input.shape)?;
    let binary_size = input.parameters.get("binary_data_size");
    let texts: Vec<String> = match (binary_size, &input.data) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has both data and binary_data_size: a tensor is sent one way, never both"
            )));
        }
        (Some(size), None) => {
            let size = size.as_u64().map(|s| s as usize).filter(|&s| s <= binary.len()).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "input `{INPUT}` has binary_data_size {size}, but {} bytes of binary data follow the JSON",
                    binary.len()
                ))
            })?;
            let (raw, rest) = binary.split_at(size);
            binary = rest;
            let rows = split_raw_bytes(raw, n)?;
            rows.iter().enumerate().map(|(i, row)| text_of_row(i, row)).collect::<Result<_, _>>()?
        }
        (None, Some(data)) => {
            let mut rows = Vec::with_capacity(n);
            flatten(data, &mut rows, 0)?;
            if rows.len() != n {
                return Err(Status::invalid_argument(format!(
                    "input `{INPUT}` has shape {:?} ({n} rows) but {} elements in data",
                    input.shape,
                    rows.len()
                )));
            }
            rows.iter().enumerate().map(|(i, row)| text_of_row(i, row.as_bytes())).collect::<Result<_, _>>()?
        }
        (None, None) => {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has no data: send its rows as `data` (strings) or as binary data"
            )));
        }
    };
    if !binary.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{} bytes of binary data follow the JSON that no input claims",
            binary.len()
        )));
    }
    let wanted = Output::selection(request.outputs.iter().map(|o| o.name.as_str()))?;
    let all_binary = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let binary_out = wanted
        .iter()
        .map(|w| {
            let asked = request.outputs.iter().find(|o| o.name == w.name());
            asked.and_then(|o| o.parameters.get("binary_data")).and_then(Value::as_bool).unwrap_or(all_binary)
        })
        .collect();
    Ok((texts, binary_out, wanted, request))
}

/// A `data` value's strings, row-major (nested arrays as the shape has them, or flat).
fn flatten<'a>(data: &'a Value, rows: &mut Vec<&'a str>, depth: usize) -> Result<(), Status> {
    match data {
        Value::String(s) => rows.push(s),
        Value::Array(items) if depth < 2 => {
            for item in items {
                flatten(item, rows, depth + 1)?;
            }
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` is BYTES: its data must be strings, one per row, got {}",
                match other {
                    Value::Array(_) => "arrays nested deeper than the shape [N, 1]",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    Value::Null => "null",
                    Value::Object(_) => "an object",
                    Value::String(_) => unreachable!(),
                }
            )));
        }
    }
    Ok(())
}

fn encode(oip: &Oip, id: Option<String>, wanted: &[Output], binary_out: &[bool], answers: &Answers) -> Response {
    let n = answers.labels.len();
    let mut binary = Vec::new();
    let outputs: Vec<Value> = wanted
        .iter()
        .zip(binary_out)
        .map(|(&output, &as_binary)| {
            let mut tensor = json!({"name": output.name(), "datatype": output.datatype(), "shape": [n]});
            if as_binary {
                let raw = output.raw(answers);
                tensor["parameters"] = json!({"binary_data_size": raw.len()});
                binary.extend_from_slice(&raw);
            } else {
                tensor["data"] = match output {
                    Output::Label => json!(answers.labels),
                    Output::Probability => json!(answers.spam_probabilities),
                };
            }
            tensor
        })
        .collect();
    let mut body = json!({"model_name": MODEL_NAME, "model_version": oip.version(), "outputs": outputs});
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    let json = body.to_string();
    if binary.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], json).into_response();
    }
    let json_len = json.len();
    let mut bytes = json.into_bytes();
    bytes.extend_from_slice(&binary);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))],
        [(HEADER_LENGTH, HeaderValue::from(json_len))],
        bytes,
    )
        .into_response()
}
