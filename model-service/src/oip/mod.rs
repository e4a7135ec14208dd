//! The Open Inference Protocol (the "KServe v2" protocol spoken by KServe, Seldon's
//! MLServer and Triton) beside `sms.v1`: its gRPC service `inference.GRPCInferenceService`
//! here, its HTTP/JSON form in `oip_rest`. Both decode a call into rows of text, validated
//! exactly as `Classify` validates its text, and go through `Serving::predict`: the same
//! worker pool, overload bound, deadlines, metrics and shadow comparison as `sms.v1`.
//!
//! The model is `sms-spam`, its one version the served one (MODEL_VERSION). Input: one
//! `BYTES` tensor `text` of shape `[N]` or `[N, 1]`, 1 <= N <= MAX_BATCH_ROWS. Outputs:
//! `label` (`BYTES [N]`, `spam` or `ham`) and `spam_probability` (`FP32 [N]`).
//!
//! Here the protocol's names and `Oip`, what both forms answer with; `input` decodes and
//! validates the rows, `output` encodes the answers, `grpc` is the gRPC service.

use std::{sync::Arc, time::Duration};

use sms_proto::inference::{ModelMetadataResponse, ServerMetadataResponse, model_metadata_response::TensorMetadata};
use sms_runtime::trace;
use tonic::Status;
use tracing::Instrument;

use crate::{
    metrics::Protocol,
    service::{Answers, Serving},
};

mod grpc;
mod input;
mod output;

pub use grpc::{OipGrpc, string_parameter};
pub(crate) use input::{check_input, one_input_expected};
pub use input::{split_raw_bytes, text_of_row};
pub use output::Output;

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
