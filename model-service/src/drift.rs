//! What the model is shown and what it answers, against what it was measured on: the
//! buckets of the live histograms `sms_model_spam_probability` and `sms_model_input_chars`,
//! and the model card's `reference` (training's held-out split in the same buckets), which
//! the metrics export as `sms_model_reference_share` so that Prometheus alone can compute
//! the drift (grafana/rules/sms-drift.rules.yml; docs/contracts.md).

use serde::Deserialize;

/// Upper bounds (Prometheus' `le`) of the spam probability's buckets: ten of equal width.
pub const SPAM_PROBABILITY_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Upper bounds of the input's length in characters (after normalization): fine where SMS
/// texts are (most under 160 characters), up to the 1,000-character limit.
pub const INPUT_CHARS_BUCKETS: &[f64] =
    &[10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 200.0, 300.0, 1000.0];

/// The `quantity` label of `sms_model_reference_share`: the live histogram it is the
/// reference of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    SpamProbability,
    InputChars,
}

impl Quantity {
    pub const ALL: [Self; 2] = [Self::SpamProbability, Self::InputChars];

    pub fn label(self) -> &'static str {
        match self {
            Self::SpamProbability => "spam_probability",
            Self::InputChars => "input_chars",
        }
    }

    pub fn buckets(self) -> &'static [f64] {
        match self {
            Self::SpamProbability => SPAM_PROBABILITY_BUCKETS,
            Self::InputChars => INPUT_CHARS_BUCKETS,
        }
    }
}

/// A bucket bound as the histograms' `le` label shows it, and the reference's `bucket`
/// label with it (the same spelling, so the two join on it): `0.1`, `1`, `160`. (Not
/// `le` on the reference: Prometheus reserves `le` for histograms.)
pub fn le_label(bound: f64) -> String {
    bound.to_string()
}

/// The share of the held-out messages in each bucket (previous bound, `le`].
#[derive(Debug, Clone, Deserialize)]
pub struct Shares {
    pub le: Vec<f64>,
    pub share: Vec<f64>,
}

/// `reference` in model.json (written by training/train.py).
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// Share of the held-out messages the model labels spam (score >= threshold): what
    /// the live share of `result="spam"` predictions is compared with.
    pub predicted_spam_share: f64,
    pub spam_probability: Shares,
    pub input_chars: Shares,
}

impl Reference {
    pub fn shares(&self, quantity: Quantity) -> &Shares {
        match quantity {
            Quantity::SpamProbability => &self.spam_probability,
            Quantity::InputChars => &self.input_chars,
        }
    }

    /// Whether this reference can be compared with the live histograms: the service's
    /// buckets exactly, shares in [0, 1] that add up to 1. A card written for other buckets
    /// is still served (drift is monitoring, not the answer), without a reference.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.predicted_spam_share) {
            return Err(format!("predicted_spam_share {} is not in [0, 1]", self.predicted_spam_share));
        }
        for q in Quantity::ALL {
            let s = self.shares(q);
            if s.le != q.buckets() {
                return Err(format!(
                    "{} buckets {:?} are not this service's {:?} (retrain with the same buckets)",
                    q.label(),
                    s.le,
                    q.buckets()
                ));
            }
            if s.share.len() != s.le.len() || s.share.iter().any(|x| !(0.0..=1.0).contains(x)) {
                return Err(format!("{} needs one share in [0, 1] per bucket", q.label()));
            }
            let total: f64 = s.share.iter().sum();
            // Training rounds each share to 6 decimals.
            if (total - 1.0).abs() > 1e-4 {
                return Err(format!("{} shares add up to {total}, not 1", q.label()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(version: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(version).join("model.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_committed_cards_carry_a_reference_in_this_services_buckets() {
        for version in ["v1", "v2"] {
            let reference: Reference = serde_json::from_value(card(version)["reference"].clone()).unwrap();
            reference.check().unwrap_or_else(|e| panic!("{version}: {e}"));
        }
    }

    #[test]
    fn a_reference_in_other_buckets_or_not_adding_up_is_refused() {
        let good: Reference = serde_json::from_value(card("v1")["reference"].clone()).unwrap();
        let mut other_buckets = good.clone();
        other_buckets.input_chars.le[0] = 15.0;
        assert!(other_buckets.check().unwrap_err().contains("input_chars buckets"));
        let mut short = good.clone();
        short.spam_probability.share.pop();
        assert!(short.check().unwrap_err().contains("one share in [0, 1] per bucket"));
        let mut not_one = good;
        not_one.spam_probability.share[0] += 0.01;
        assert!(not_one.check().unwrap_err().contains("add up to"));
    }

    #[test]
    fn le_labels_are_spelled_as_the_exporter_spells_bucket_bounds() {
        assert_eq!(le_label(0.1), "0.1");
        assert_eq!(le_label(1.0), "1");
        assert_eq!(le_label(160.0), "160");
    }
}
