//! The Open Inference Protocol (the "KServe v2" protocol spoken by KServe, Seldon's
//! MLServer and Triton) beside `sms.v1`: its gRPC service `inference.GRPCInferenceService`
//! here, its HTTP/JSON form in `oip_rest`. Both decode a call into rows of text, validated
//! exactly as `Classify` validates its text, and go through `Serving::predict`: the same
//! worker pool, overload bound, deadlines, metrics and shadow comparison as `sms.v1`.
//!
//! The model is `sms-spam`, its one version the served one (MODEL_VERSION). Input: one
//! `BYTES` tensor `text` of shape `[N]` or `[N, 1]`, 1 <= N <= MAX_BATCH_ROWS. Outputs:
//! `label` (`BYTES [N]`, `spam` or `ham`) and `spam_probability` (`FP32 [N]`).

use std::{sync::Arc, time::Duration};

use sms_proto::{
    inference::{
        InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
        ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
        ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
        grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice,
        model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
    },
    validate_text,
};
use sms_runtime::trace::{self, Metadata};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    metrics::Protocol,
    service::{Answers, Serving, deadline, guess_in, parse_guess},
};

/// The model's name in the protocol.
pub const MODEL_NAME: &str = "sms-spam";
pub const INPUT: &str = "text";
pub const LABEL: &str = "label";
pub const PROBABILITY: &str = "spam_probability";
/// The request parameter that carries the user's guess (`spam` or `ham`), like the
/// `x-sms-guess` metadata of `sms.v1`.
pub const GUESS_PARAMETER: &str = "guess";
/// Largest request either form accepts (a gRPC message, an HTTP body): 64 rows of 1,000
/// characters are at most 256 KB as UTF-8 and ~400 KB as escaped JSON.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// What `ServerMetadata` names.
pub const SERVER_NAME: &str = "sms-model-service";

/// An output of the model, in the order the caller asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Label,
    Probability,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Self::Label => LABEL,
            Self::Probability => PROBABILITY,
        }
    }

    pub fn datatype(self) -> &'static str {
        match self {
            Self::Label => "BYTES",
            Self::Probability => "FP32",
        }
    }

    /// The requested output named `name`, or INVALID_ARGUMENT naming the model's outputs.
    pub fn named(name: &str) -> Result<Self, Status> {
        match name {
            LABEL => Ok(Self::Label),
            PROBABILITY => Ok(Self::Probability),
            _ => Err(Status::invalid_argument(format!(
                "unknown output {name:?}: model {MODEL_NAME} has outputs `{LABEL}` (BYTES) and `{PROBABILITY}` (FP32)"
            ))),
        }
    }

    /// The outputs a request asked for by name (every output when it named none).
    pub fn selection<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<Self>, Status> {
        let mut wanted = Vec::new();
        for name in names {
            let output = Self::named(name)?;
            if !wanted.contains(&output) {
                wanted.push(output);
            }
        }
        if wanted.is_empty() {
            wanted = vec![Self::Label, Self::Probability];
        }
        Ok(wanted)
    }

    /// This output's elements as raw bytes: length-prefixed UTF-8 for `BYTES`, 4-byte
    /// little-endian floats for `FP32`.
    pub fn raw(self, answers: &Answers) -> Vec<u8> {
        match self {
            Self::Label => {
                let mut raw = Vec::with_capacity(answers.labels.len() * 8);
                for label in &answers.labels {
                    raw.extend_from_slice(&(label.len() as u32).to_le_bytes());
                    raw.extend_from_slice(label.as_bytes());
                }
                raw
            }
            Self::Probability => answers.spam_probabilities.iter().flat_map(|p| p.to_le_bytes()).collect(),
        }
    }
}

/// The model and server facts both forms answer with.
pub struct Oip {
    pub serving: Arc<Serving>,
}

impl Oip {
    pub fn new(serving: Arc<Serving>) -> Self {
        Self { serving }
    }

    pub fn version(&self) -> &str {
        &self.serving.model_version
    }

    /// OK for the served model (any version when `version` is empty), else NOT_FOUND
    /// naming what is served.
    pub fn check_model(&self, name: &str, version: &str) -> Result<(), Status> {
        let served = self.version();
        if name != MODEL_NAME {
            return Err(Status::not_found(format!(
                "model {name:?} is not served here: this server serves model {MODEL_NAME:?} version {served:?}"
            )));
        }
        if !version.is_empty() && version != served {
            return Err(Status::not_found(format!(
                "model {MODEL_NAME:?} has no version {version:?} here: this server serves version {served:?}"
            )));
        }
        Ok(())
    }

    /// The number of rows a tensor of `shape` holds: `[N]` or `[N, 1]`, 1 <= N <= the bound.
    pub fn rows_in(&self, shape: &[i64]) -> Result<usize, Status> {
        let max = self.serving.max_rows;
        let n = match shape {
            [n] | [n, 1] => *n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "input `{INPUT}` has shape {shape:?}: it must be [N] or [N, 1], one text per row"
                )));
            }
        };
        if n < 1 {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has shape {shape:?}: it needs at least one row"
            )));
        }
        if n as u64 > max as u64 {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has {n} rows; at most {max} rows a call are accepted (MAX_BATCH_ROWS)"
            )));
        }
        Ok(n as usize)
    }

    pub fn model_metadata(&self) -> ModelMetadataResponse {
        let tensor = |name: &str, datatype: &str| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![-1],
        };
        ModelMetadataResponse {
            name: MODEL_NAME.into(),
            versions: vec![self.version().to_string()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![tensor(INPUT, "BYTES")],
            outputs: vec![tensor(LABEL, "BYTES"), tensor(PROBABILITY, "FP32")],
        }
    }

    pub fn server_metadata(&self) -> ServerMetadataResponse {
        ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into()],
        }
    }

    /// Scores validated rows within `deadline`, in a span that continues the caller's trace.
    pub async fn infer(
        &self,
        texts: Vec<String>,
        guess: Option<&'static str>,
        parent: Option<opentelemetry::trace::SpanContext>,
        deadline: Duration,
        protocol: Protocol,
    ) -> Result<Answers, Status> {
        let span = tracing::info_span!("model_infer", otel.name = "inference.GRPCInferenceService/ModelInfer",
                                       otel.kind = "server", protocol = protocol.label(),
                                       source = %self.serving.source, rows = texts.len());
        let trace = trace::continue_trace(&span, parent);
        let trace_id = trace.trace_id().to_string();
        let answer = self.serving.predict(texts, guess, &trace_id, protocol).instrument(span);
        let result = tokio::time::timeout(deadline, answer).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!("no answer within {} ms", deadline.as_millis())))
        });
        match &result {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tracing::debug!(trace_id = %trace_id, "infer refused: overloaded")
            }
            Err(s) => {
                tracing::warn!(trace_id = %trace_id, code = ?s.code(), message = %s.message(), "infer refused")
            }
        }
        result
    }
}

/// Row `i`'s bytes as a validated, normalized text, or INVALID_ARGUMENT naming the row.
pub fn text_of_row(i: usize, row: &[u8]) -> Result<String, Status> {
    let text = std::str::from_utf8(row)
        .map_err(|e| Status::invalid_argument(format!("row {i} of input `{INPUT}` is not valid UTF-8: {e}")))?;
    validate_text(text).map_err(|e| Status::invalid_argument(format!("row {i} of input `{INPUT}`: {e}")))
}

/// The rows of a raw `BYTES` tensor: each a 4-byte little-endian length and that many
/// bytes, exactly `n` of them filling the buffer.
pub fn split_raw_bytes(raw: &[u8], n: usize) -> Result<Vec<&[u8]>, Status> {
    let bad = |why: String| {
        Status::invalid_argument(format!(
            "the raw contents of input `{INPUT}` do not add up: {why} (each BYTES element is a 4-byte \
             little-endian length and that many bytes)"
        ))
    };
    let mut rows = Vec::with_capacity(n);
    let mut rest = raw;
    while !rest.is_empty() {
        if rows.len() == n {
            return Err(bad(format!("{} bytes are left after the {n} rows the shape says", rest.len())));
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(bad(format!("row {} has a length prefix of {} bytes", rows.len(), rest.len())));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(bad(format!("row {} claims {len} bytes, {} are left", rows.len(), tail.len())));
        }
        let (row, tail) = tail.split_at(len);
        rows.push(row);
        rest = tail;
    }
    if rows.len() != n {
        return Err(bad(format!("they hold {} rows, the shape says {n}", rows.len())));
    }
    Ok(rows)
}

/// The user's guess in the request's parameters (`guess`), else in the call's metadata.
fn guess_of(request: &Request<ModelInferRequest>) -> Option<&'static str> {
    let parameter = request.get_ref().parameters.get(GUESS_PARAMETER).and_then(|p| match &p.parameter_choice {
        Some(ParameterChoice::StringParam(s)) => Some(s.as_str()),
        _ => None,
    });
    parse_guess(parameter).or_else(|| guess_in(request.metadata()))
}

/// The refusal of a request whose input count is not one (both transports).
pub(crate) fn one_input_expected(count: usize) -> Status {
    Status::invalid_argument(format!(
        "the request has {count} inputs: model {MODEL_NAME} takes one, `{INPUT}` (BYTES, shape [N] or [N, 1])"
    ))
}

/// The one input's name and datatype checked, and its row count from its shape (both
/// transports).
pub(crate) fn check_input(oip: &Oip, name: &str, datatype: &str, shape: &[i64]) -> Result<usize, Status> {
    if name != INPUT {
        return Err(Status::invalid_argument(format!(
            "unknown input {name:?}: model {MODEL_NAME} takes one input, `{INPUT}` (BYTES, shape [N] or [N, 1])"
        )));
    }
    if datatype != "BYTES" {
        return Err(Status::invalid_argument(format!(
            "input `{INPUT}` has datatype {datatype:?}; it must be BYTES (one UTF-8 text per row)"
        )));
    }
    oip.rows_in(shape)
}

/// A gRPC request's rows, validated, and whether it sent them raw.
fn texts_of(oip: &Oip, request: &ModelInferRequest) -> Result<(Vec<String>, bool), Status> {
    oip.check_model(&request.model_name, &request.model_version)?;
    let [input] = &request.inputs[..] else {
        return Err(one_input_expected(request.inputs.len()));
    };
    let n = check_input(oip, &input.name, &input.datatype, &input.shape)?;
    let raw = !request.raw_input_contents.is_empty();
    let rows: Vec<&[u8]> = if raw {
        if input.contents.is_some() {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has contents while the request has raw_input_contents: \
                 a request uses one or the other, never both"
            )));
        }
        let [contents] = &request.raw_input_contents[..] else {
            return Err(Status::invalid_argument(format!(
                "raw_input_contents has {} entries for 1 input",
                request.raw_input_contents.len()
            )));
        };
        split_raw_bytes(contents, n)?
    } else {
        let contents = input.contents.as_ref().ok_or_else(|| {
            Status::invalid_argument(format!(
                "input `{INPUT}` has no data: send its rows in contents.bytes_contents or raw_input_contents"
            ))
        })?;
        let c = contents;
        let others_empty = c.bool_contents.is_empty()
            && c.int_contents.is_empty()
            && c.int64_contents.is_empty()
            && c.uint_contents.is_empty()
            && c.uint64_contents.is_empty()
            && c.fp32_contents.is_empty()
            && c.fp64_contents.is_empty();
        let bytes_contents = &c.bytes_contents;
        if !others_empty {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` is BYTES: its rows go in contents.bytes_contents, no other contents field"
            )));
        }
        if bytes_contents.len() != n {
            return Err(Status::invalid_argument(format!(
                "input `{INPUT}` has shape {:?} ({n} rows) but {} elements in contents.bytes_contents",
                input.shape,
                bytes_contents.len()
            )));
        }
        bytes_contents.iter().map(Vec::as_slice).collect()
    };
    let texts = rows.iter().enumerate().map(|(i, row)| text_of_row(i, row)).collect::<Result<_, _>>()?;
    Ok((texts, raw))
}

/// `inference.GRPCInferenceService` on the model service's gRPC port.
pub struct OipGrpc(pub Arc<Oip>);

#[tonic::async_trait]
impl GrpcInferenceService for OipGrpc {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    /// Serving at all means the model is loaded and warmed on every worker.
    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        self.0.check_model(&request.get_ref().name, &request.get_ref().version)?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(self.0.server_metadata()))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.0.check_model(&request.get_ref().name, &request.get_ref().version)?;
        Ok(Response::new(self.0.model_metadata()))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let oip = &self.0;
        let (texts, raw) = texts_of(oip, request.get_ref())?;
        let wanted = Output::selection(request.get_ref().outputs.iter().map(|o| o.name.as_str()))?;
        let guess = guess_of(&request);
        let parent = trace::extract(&Metadata(request.metadata()));
        let deadline = deadline(request.metadata(), oip.serving.request_timeout);
        let answers = oip.infer(texts, guess, parent, deadline, Protocol::OipGrpc).await?;
        let n = answers.labels.len() as i64;
        let mut response = ModelInferResponse {
            model_name: MODEL_NAME.into(),
            model_version: oip.version().to_string(),
            id: request.into_inner().id,
            ..Default::default()
        };
        for output in wanted {
            let contents = if raw {
                response.raw_output_contents.push(output.raw(&answers));
                None
            } else {
                Some(match output {
                    Output::Label => InferTensorContents {
                        bytes_contents: answers.labels.iter().map(|l| l.as_bytes().to_vec()).collect(),
                        ..Default::default()
                    },
                    Output::Probability => {
                        InferTensorContents { fp32_contents: answers.spam_probabilities.clone(), ..Default::default() }
                    }
                })
            };
            response.outputs.push(InferOutputTensor {
                name: output.name().into(),
                datatype: output.datatype().into(),
                shape: vec![n],
                parameters: Default::default(),
                contents,
            });
        }
        Ok(Response::new(response))
    }
}

/// A string parameter, as the protocol's gRPC form carries it.
pub fn string_parameter(value: &str) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::StringParam(value.into())) }
}

#[cfg(test)]
mod tests {
    use super::split_raw_bytes;

    #[test]
    fn raw_bytes_must_add_up() {
        let mut raw = Vec::new();
        for t in ["hi", "", "a longer text"] {
            raw.extend_from_slice(&(t.len() as u32).to_le_bytes());
            raw.extend_from_slice(t.as_bytes());
        }
        let rows = split_raw_bytes(&raw, 3).unwrap();
        assert_eq!(rows, [&b"hi"[..], b"", b"a longer text"]);
        for (bytes, n) in [(&raw[..raw.len() - 1], 3), (&raw[..], 2), (&raw[..], 4), (&raw[..3], 1), (&[][..], 1)] {
            let err = split_raw_bytes(bytes, n).unwrap_err();
            assert!(err.message().contains("do not add up"), "{}", err.message());
        }
        let mut lying = raw.clone();
        lying[0] = 200;
        assert!(split_raw_bytes(&lying, 3).is_err());
    }
}
