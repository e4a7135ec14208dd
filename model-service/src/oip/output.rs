//! The model's outputs (`label`, `spam_probability`): picked by name from a request, and
//! taken from the answers as the protocol's tensors or raw bytes.

use sms_proto::infer_answer::{Elements, OutputTensor, put_raw_bytes, put_raw_fp32};
use tonic::Status;

use super::{LABEL, MODEL_NAME, PROBABILITY};
use crate::service::Answers;

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
        let mut raw = Vec::new();
        match self {
            Self::Label => put_raw_bytes(&answers.labels, &mut raw),
            Self::Probability => put_raw_fp32(&answers.spam_probabilities, &mut raw),
        }
        raw
    }

    /// This output as the gRPC answer's tensor, its elements taken from `answers` (a
    /// request names each output once: `selection`).
    pub fn tensor(self, answers: &mut Answers) -> OutputTensor {
        let elements = match self {
            Self::Label => Elements::Bytes(std::mem::take(&mut answers.labels)),
            Self::Probability => Elements::Fp32(std::mem::take(&mut answers.spam_probabilities)),
        };
        OutputTensor { name: self.name(), datatype: self.datatype(), elements }
    }
}
