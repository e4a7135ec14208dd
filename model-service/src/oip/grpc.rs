//! `inference.GRPCInferenceService`: the protocol's gRPC form on the model service's gRPC
//! port, its rows in `contents.bytes_contents` or `raw_input_contents`.

use std::sync::Arc;

use sms_proto::{
    infer_answer::ModelInferAnswer,
    inference::{
        InferParameter, ModelInferRequest, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
        ModelReadyResponse, ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
        ServerReadyRequest, ServerReadyResponse, grpc_inference_service_server::GrpcInferenceService,
        infer_parameter::ParameterChoice,
    },
};
use sms_runtime::trace::{self, Metadata};
use tonic::{Request, Response, Status};

use super::{
    GUESS_PARAMETER, INPUT, MODEL_NAME, Oip, Output, check_input, one_input_expected, split_raw_bytes, text_of_row,
};
use crate::{
    metrics::Protocol,
    service::{deadline, guess_in, parse_guess},
};

/// The user's guess in the request's parameters (`guess`), else in the call's metadata.
fn guess_of(request: &Request<ModelInferRequest>) -> Option<&'static str> {
    let parameter = request.get_ref().parameters.get(GUESS_PARAMETER).and_then(|p| match &p.parameter_choice {
        Some(ParameterChoice::StringParam(s)) => Some(s.as_str()),
        _ => None,
    });
    parse_guess(parameter).or_else(|| guess_in(request.metadata()))
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

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferAnswer>, Status> {
        let oip = &self.0;
        let (texts, raw) = texts_of(oip, request.get_ref())?;
        let wanted = Output::selection(request.get_ref().outputs.iter().map(|o| o.name.as_str()))?;
        let guess = guess_of(&request);
        let parent = trace::extract(&Metadata(request.metadata()));
        let deadline = deadline(request.metadata(), oip.serving.request_timeout);
        // The request is let go before the wait, so the call's state (boxed by async_trait)
        // does not carry it: a state of a kilobyte or more takes the allocator's slow path.
        let id = request.into_inner().id;
        let mut answers = oip.infer(texts, guess, parent, deadline, Protocol::OipGrpc).await?;
        let outputs = wanted.into_iter().map(|output| output.tensor(&mut answers)).collect();
        Ok(Response::new(ModelInferAnswer {
            model_name: MODEL_NAME,
            model_version: oip.serving.model_version.clone(),
            id,
            outputs,
            raw,
        }))
    }
}

/// A string parameter, as the protocol's gRPC form carries it.
pub fn string_parameter(value: &str) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::StringParam(value.into())) }
}
