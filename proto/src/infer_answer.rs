//! The server's `inference.ModelInferResponse`, encoded straight from the model's answers.
//!
//! The generated `ModelInferResponse` owns every name, datatype, shape and element: a
//! dozen allocations for a 1-row answer, each freed again once it is encoded. The server
//! sends the same message, byte for byte, from borrowed names and the answers' own
//! vectors (the server's generated code names this type for `ModelInferResponse`,
//! build.rs), so answering `ModelInfer` costs about what answering `Classify` does
//! (docs/performance.md). Clients decode it as the generated `ModelInferResponse`.

use std::sync::Arc;

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

/// A `ModelInferResponse` as the server answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInferAnswer {
    pub model_name: &'static str,
    pub model_version: Arc<str>,
    /// The request's `id`, echoed.
    pub id: String,
    pub outputs: Vec<OutputTensor>,
    /// Whether the elements go in `raw_output_contents` (the caller sent its input raw)
    /// rather than in each output's `contents`.
    pub raw: bool,
}

/// One output: a tensor of shape `[N]`, N its elements.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: &'static str,
    pub datatype: &'static str,
    pub elements: Elements,
}

/// An output's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// `BYTES`: `contents.bytes_contents`, or raw, each a 4-byte little-endian length and
    /// that many bytes.
    Bytes(Vec<&'static str>),
    /// `FP32`: `contents.fp32_contents`, or raw, 4-byte little-endian floats.
    Fp32(Vec<f32>),
}

// Field numbers (proto/inference/grpc_service.proto).
const MODEL_NAME: u32 = 1;
const MODEL_VERSION: u32 = 2;
const ID: u32 = 3;
const OUTPUTS: u32 = 5;
const RAW_OUTPUT_CONTENTS: u32 = 6;
const TENSOR_NAME: u32 = 1;
const TENSOR_DATATYPE: u32 = 2;
const TENSOR_SHAPE: u32 = 3;
const TENSOR_CONTENTS: u32 = 5;
const FP32_CONTENTS: u32 = 6;
const BYTES_CONTENTS: u32 = 8;

/// A length-delimited field's size: key, length, payload.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A proto3 string field: absent when empty, as generated code encodes it.
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { delimited_len(tag, s.len()) }
}

fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_delimited(tag, s.len(), buf);
        buf.put_slice(s.as_bytes());
    }
}

/// `BYTES` elements as the protocol's raw bytes.
pub fn put_raw_bytes(elements: &[&str], buf: &mut impl BufMut) {
    for e in elements {
        buf.put_u32_le(e.len() as u32);
        buf.put_slice(e.as_bytes());
    }
}

/// `FP32` elements as the protocol's raw bytes.
pub fn put_raw_fp32(elements: &[f32], buf: &mut impl BufMut) {
    for e in elements {
        buf.put_f32_le(*e);
    }
}

impl Elements {
    fn count(&self) -> usize {
        match self {
            Self::Bytes(v) => v.len(),
            Self::Fp32(v) => v.len(),
        }
    }

    /// Size of the elements as raw bytes.
    fn raw_len(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|e| 4 + e.len()).sum(),
            Self::Fp32(v) => 4 * v.len(),
        }
    }

    fn put_raw(&self, buf: &mut impl BufMut) {
        match self {
            Self::Bytes(v) => put_raw_bytes(v, buf),
            Self::Fp32(v) => put_raw_fp32(v, buf),
        }
    }

    /// Size of the `InferTensorContents` message holding the elements.
    fn contents_len(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|e| delimited_len(BYTES_CONTENTS, e.len())).sum(),
            Self::Fp32(v) => encoding::float::encoded_len_packed(FP32_CONTENTS, v),
        }
    }

    fn put_contents(&self, buf: &mut impl BufMut) {
        match self {
            Self::Bytes(v) => v.iter().for_each(|e| put_string(BYTES_CONTENTS, e, buf)),
            Self::Fp32(v) => encoding::float::encode_packed(FP32_CONTENTS, v, buf),
        }
    }
}

impl OutputTensor {
    /// Size of the `InferOutputTensor` message, its contents inline unless `raw`.
    fn message_len(&self, raw: bool) -> usize {
        let shape = [self.elements.count() as i64];
        string_len(TENSOR_NAME, self.name)
            + string_len(TENSOR_DATATYPE, self.datatype)
            + encoding::int64::encoded_len_packed(TENSOR_SHAPE, &shape)
            + if raw { 0 } else { delimited_len(TENSOR_CONTENTS, self.elements.contents_len()) }
    }

    fn put_message(&self, raw: bool, buf: &mut impl BufMut) {
        put_string(TENSOR_NAME, self.name, buf);
        put_string(TENSOR_DATATYPE, self.datatype, buf);
        encoding::int64::encode_packed(TENSOR_SHAPE, &[self.elements.count() as i64], buf);
        if !raw {
            put_delimited(TENSOR_CONTENTS, self.elements.contents_len(), buf);
            self.elements.put_contents(buf);
        }
    }
}

impl Message for ModelInferAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(MODEL_NAME, self.model_name, buf);
        put_string(MODEL_VERSION, &self.model_version, buf);
        put_string(ID, &self.id, buf);
        for output in &self.outputs {
            put_delimited(OUTPUTS, output.message_len(self.raw), buf);
            output.put_message(self.raw, buf);
        }
        if self.raw {
            for output in &self.outputs {
                put_delimited(RAW_OUTPUT_CONTENTS, output.elements.raw_len(), buf);
                output.elements.put_raw(buf);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        let outputs: usize = self.outputs.iter().map(|o| delimited_len(OUTPUTS, o.message_len(self.raw))).sum();
        let raw: usize = if self.raw {
            self.outputs.iter().map(|o| delimited_len(RAW_OUTPUT_CONTENTS, o.elements.raw_len())).sum()
        } else {
            0
        };
        string_len(MODEL_NAME, self.model_name)
            + string_len(MODEL_VERSION, &self.model_version)
            + string_len(ID, &self.id)
            + outputs
            + raw
    }

    /// Only ever encoded: a client decodes the generated `ModelInferResponse`.
    fn merge_field(&mut self, _: u32, _: WireType, _: &mut impl Buf, _: DecodeContext) -> Result<(), DecodeError> {
        #[allow(deprecated)] // prost's one way to say why a message cannot be decoded
        Err(DecodeError::new("ModelInferAnswer is the server's encoding; decode a ModelInferResponse"))
    }

    fn clear(&mut self) {
        self.id.clear();
        self.outputs.clear();
    }
}
