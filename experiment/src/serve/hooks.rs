//! Flagger's side of the webhook: its hook types, what the verdict means for each, and
//! its payload with the names in it checked.

use std::collections::HashMap;

use serde::Deserialize;

use super::logging::shown;
use crate::rules::Verdict;

/// Flagger's webhook types (`spec.analysis.webhooks[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Rollout,
    ConfirmPromotion,
    Rollback,
    ConfirmRollout,
    ConfirmTrafficIncrease,
    PreRollout,
    PostRollout,
    Event,
}

pub(super) const HOOKS: [(&str, Hook); 8] = [
    ("rollout", Hook::Rollout),
    ("confirm-promotion", Hook::ConfirmPromotion),
    ("rollback", Hook::Rollback),
    ("confirm-rollout", Hook::ConfirmRollout),
    ("confirm-traffic-increase", Hook::ConfirmTrafficIncrease),
    ("pre-rollout", Hook::PreRollout),
    ("post-rollout", Hook::PostRollout),
    ("event", Hook::Event),
];

impl Hook {
    pub(super) fn parse(name: &str) -> Option<Hook> {
        HOOKS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
    }

    pub(super) fn name(self) -> &'static str {
        HOOKS.iter().find(|(_, h)| *h == self).map(|(n, _)| *n).expect("every hook is listed")
    }

    /// Whether the verdict decides this hook's answer, and how: the answer is 200 when
    /// `passes(worst verdict)`.
    pub(super) fn gate(self) -> Option<fn(Verdict) -> bool> {
        match self {
            Hook::Rollout => Some(|v| v != Verdict::RollBack),
            Hook::ConfirmPromotion => Some(|v| v == Verdict::Promote),
            Hook::Rollback => Some(|v| v == Verdict::RollBack),
            _ => None,
        }
    }
}

/// Flagger's `CanaryWebhookPayload`; unknown fields are ignored (later Flagger versions).
#[derive(Deserialize)]
pub(super) struct Payload {
    pub(super) name: String,
    pub(super) namespace: String,
    #[serde(default)]
    pub(super) phase: String,
    #[serde(default)]
    pub(super) checksum: String,
    #[serde(default)]
    pub(super) metadata: Option<HashMap<String, String>>,
}

impl Payload {
    /// Names as Kubernetes allows them: they go into PromQL matchers and log lines.
    pub(super) fn check(&self) -> Result<(), String> {
        let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ns = &self.namespace;
        let ns_ok = (1..=63).contains(&ns.len())
            && ns.chars().all(|c| lower(c) || c == '-')
            && ns.starts_with(lower)
            && ns.ends_with(lower);
        if !ns_ok {
            return Err(format!("namespace {:?} is not a Kubernetes namespace name", shown(ns)));
        }
        let name = &self.name;
        let name_ok = (1..=253).contains(&name.len())
            && name.chars().all(|c| lower(c) || c == '-' || c == '.')
            && name.starts_with(lower)
            && name.ends_with(lower);
        if !name_ok {
            return Err(format!("name {:?} is not a Kubernetes object name", shown(name)));
        }
        if self.phase.len() > 32 || !self.phase.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("phase {:?} is not a Flagger canary phase", shown(&self.phase)));
        }
        if self.checksum.len() > 128 || !self.checksum.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("checksum {:?} is not a Flagger checksum", shown(&self.checksum)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(namespace: &str, name: &str) -> Payload {
        Payload {
            name: name.into(),
            namespace: namespace.into(),
            phase: "Progressing".into(),
            checksum: "abc123".into(),
            metadata: None,
        }
    }

    #[test]
    fn hook_names_round_trip_and_gates_answer_as_documented() {
        for (name, hook) in HOOKS {
            assert_eq!(Hook::parse(name), Some(hook));
            assert_eq!(hook.name(), name);
        }
        assert_eq!(Hook::parse("Rollout"), None);
        let rollout = Hook::Rollout.gate().unwrap();
        assert!(rollout(Verdict::Promote) && rollout(Verdict::KeepRunning) && !rollout(Verdict::RollBack));
        let promotion = Hook::ConfirmPromotion.gate().unwrap();
        assert!(promotion(Verdict::Promote) && !promotion(Verdict::KeepRunning) && !promotion(Verdict::RollBack));
        let rollback = Hook::Rollback.gate().unwrap();
        assert!(!rollback(Verdict::Promote) && !rollback(Verdict::KeepRunning) && rollback(Verdict::RollBack));
        for hook in [Hook::Event, Hook::PreRollout, Hook::PostRollout, Hook::ConfirmRollout] {
            assert!(hook.gate().is_none());
        }
        assert!(Hook::ConfirmTrafficIncrease.gate().is_none());
    }

    #[test]
    fn payload_names_must_be_kubernetes_names() {
        assert!(payload("sms-app", "sms-app-app").check().is_ok());
        for (ns, name) in [
            ("", "app"),
            ("Sms", "app"),
            ("sms\"}", "app"),
            ("-sms", "app"),
            (&"a".repeat(64), "app"),
            ("sms", ""),
            ("sms", "app\n"),
        ] {
            assert!(payload(ns, name).check().is_err(), "{ns:?} {name:?}");
        }
        let mut p = payload("sms", "app");
        p.phase = "Progressing\"".into();
        assert!(p.check().is_err());
    }
}
