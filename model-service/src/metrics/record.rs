//! What the service records as things happen: predictions and their drift figures,
//! guesses, shadow comparisons, answered calls, refused connections, reloads and the card
//! being served.

use std::sync::Arc;

use opentelemetry::KeyValue;
use sms_runtime::conn::OnRefused;

use super::{Metrics, Protocol, ServedModel};
use crate::model::ModelCard;

impl Metrics {
    /// One prediction (`spam` unless `is_spam` is false) of a call that came in through
    /// `protocol`, and the time ONNX Runtime took for it.
    pub fn predicted(&self, protocol: Protocol, is_spam: bool, inference_seconds: f64) {
        let p = &self.predictions[protocol as usize];
        if is_spam { &p.spam } else { &p.ham }.add(1);
        p.inference_seconds.record(inference_seconds);
    }

    /// What one message of a call that came in through `protocol` looked like to the
    /// model: its spam probability and its length in characters (the drift histograms).
    pub fn scored(&self, protocol: Protocol, spam_probability: f32, input_chars: usize) {
        let p = &self.predictions[protocol as usize];
        p.spam_probability.record(f64::from(spam_probability));
        p.input_chars.record(input_chars as u64);
    }

    /// A call that carried the user's guess: did this model's answer agree with it?
    pub fn guessed(&self, agrees: bool) {
        if agrees { &self.guess_agrees } else { &self.guess_disagrees }.add(1);
    }

    /// A call also scored by the reference model (only on a server that has one).
    pub fn compared(&self, agrees: bool, probability_gap: f64) {
        if let Some(c) = &self.comparisons {
            if agrees { &c.agree } else { &c.disagree }.add(1);
            c.gap.record(probability_gap);
        }
    }

    /// One answered Classify call, by its gRPC code name (`Ok`, `InvalidArgument`, ...).
    pub fn answered(&self, code: tonic::Code) {
        if code == tonic::Code::Ok {
            self.answered_ok.add(1);
        } else {
            let [version, source] = self.labels.clone();
            self.requests.add(1, &[version, source, KeyValue::new("code", code_name(code))]);
        }
    }

    /// What `listener`'s accept loop calls for each connection it refuses over
    /// MAX_CONNECTIONS; its series is exported at 0 from now on (start-up, for both).
    pub fn refusals(&self, listener: &'static str) -> OnRefused {
        let [version, source] = self.labels.clone();
        let refused = self.refused_connections.bind(&[version, source, KeyValue::new("listener", listener)]);
        refused.add(0);
        Arc::new(move || refused.add(1))
    }

    pub fn reloaded(&self, success: bool) {
        let [version, source] = self.labels.clone();
        let outcome = KeyValue::new("outcome", if success { "success" } else { "failure" });
        self.reloads.add(1, &[version, source, outcome]);
    }

    /// The card being served: `sms_model_info` and the drift reference (a card without
    /// one, or with one in other buckets, exports no reference).
    pub fn set_model_info(&self, card: &ModelCard) {
        let reference = card.reference.as_ref().and_then(|r| match r.check() {
            Ok(()) => Some(Arc::new(r.clone())),
            Err(e) => {
                tracing::warn!(model = %card.name, "the model card's drift reference is not exported: {e}");
                None
            }
        });
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) =
            ServedModel { name: card.name.clone(), data_sha256: card.data.sha256.clone(), reference };
    }
}

/// The gRPC code's name as the `code` label shows it (tonic's `Debug` spelling).
pub(super) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_are_tonics_debug_names() {
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(super::code_name(code), format!("{code:?}"));
        }
    }
}
