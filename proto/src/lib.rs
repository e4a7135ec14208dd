//! The `sms.v1` contract shared by both tiers: the gRPC types (generated from
//! `proto/sms/v1/classifier.proto`), their codecs, and the text limits and
//! normalization both enforce. What the services run on (telemetry, settings, shutdown)
//! is in `sms-runtime`.

pub mod codec;
pub mod infer_answer;

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/client/sms.v1.rs"));

    pub use super::server::spam_classifier_server;

    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sms_v1_descriptor");
}

/// The Open Inference Protocol's gRPC form (`inference.GRPCInferenceService`, the
/// "KServe v2" protocol), from `proto/inference/grpc_service.proto`.
pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/client/inference.rs"));

    pub use super::server::inference::grpc_inference_service_server;

    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");
}

mod server {
    include!(concat!(env!("OUT_DIR"), "/server/sms.v1.rs"));

    pub mod inference {
        include!(concat!(env!("OUT_DIR"), "/server/inference.rs"));
    }
}

/// Longest accepted SMS text, in characters after trimming. A concatenated SMS tops out
/// around 1,600 GSM-7 characters in theory; real messages are far shorter.
pub const MAX_TEXT_CHARS: usize = 1000;

/// The gRPC metadata key that carries the user's guess (`spam` or `ham`) with a Classify
/// call, so every model (the shadow too: the mirror copies metadata) can count its
/// agreement with users, although users only ever see the serving model's answer.
pub const GUESS_METADATA: &str = "x-sms-guess";

/// Largest gRPC message either side accepts: a 1,000-character text is at most 4 KB of
/// UTF-8, so 16 KiB leaves room for framing and refuses anything absurd early.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024;

/// The models' input contract: trim, and collapse each run of whitespace into one space.
/// "Whitespace" is what Python's `str.split()` splits on, so training (training/train.py)
/// and serving agree on every input.
pub fn normalize_text(text: &str) -> String {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    text.split(is_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Why a text cannot be classified. Both tiers refuse the same texts with the same words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong { chars: usize },
    NulCharacter,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "the message is empty or only whitespace: send the SMS text to classify"),
            Self::TooLong { chars } => {
                write!(f, "the message is {chars} characters long; the limit is {MAX_TEXT_CHARS}")
            }
            Self::NulCharacter => write!(f, "the message contains a NUL character"),
        }
    }
}

impl std::error::Error for TextError {}

/// The normalized text the model will see, or why it cannot be classified.
pub fn validate_text(text: &str) -> Result<String, TextError> {
    if text.contains('\0') {
        return Err(TextError::NulCharacter);
    }
    let normalized = normalize_text(text);
    if normalized.is_empty() {
        return Err(TextError::Empty);
    }
    let chars = normalized.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(TextError::TooLong { chars });
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::normalize_text;

    #[test]
    fn normalize_matches_the_training_contract() {
        assert_eq!(normalize_text("  WIN\t\ta  prize\n"), "WIN a prize");
        assert_eq!(normalize_text("a\u{1f}b\u{a0}c"), "a b c");
        assert_eq!(normalize_text(" \n\t "), "");
    }
}
