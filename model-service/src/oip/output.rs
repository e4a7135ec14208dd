//! The model's outputs (`label`, `spam_probability`): picked by name from a request, and
//! encoded as the protocol's raw bytes.

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
