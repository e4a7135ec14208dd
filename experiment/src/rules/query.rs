//! The PromQL the rules ask: label matchers for the settings' versions and namespace, the
//! window's increases, and what the ingress gateway answered each version.

use anyhow::Result;

use super::Settings;
use crate::prom::Counts;

/// PromQL text for the settings: label matchers and the window.
pub(super) struct Query<'a> {
    pub(super) s: &'a Settings,
}

impl Query<'_> {
    /// `{m1,m2,namespace="..."}`
    fn sel(&self, matchers: &[&str]) -> String {
        let mut all: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
        if let Some(ns) = &self.s.namespace {
            all.push(format!("namespace={ns:?}"));
        }
        format!("{{{}}}", all.join(","))
    }

    pub(super) fn versions(&self) -> String {
        // Version names are [A-Za-z0-9._-] (checked by the CLI); only the dot needs escaping.
        let re = |v: &str| v.replace('.', r"\\.");
        format!("version=~\"{}|{}\"", re(&self.s.baseline), re(&self.s.candidate))
    }

    pub(super) fn increase(&self, by: &str, metric: &str, matchers: &[&str]) -> String {
        format!("sum by ({by}) (increase({metric}{}[{}s]))", self.sel(matchers), self.s.window_secs)
    }

    /// Requests the ingress gateway routed to each app version over the window, by
    /// `class` (`2`..`5` for 2xx..5xx): what users got, a canary's own silence included
    /// (dead, it counts nothing; the gateway answers 503). Istio's `istio_requests_total`
    /// as the gateway reports it, or a stock Envoy's per-subset cluster counts (`make mesh`).
    pub(super) fn gateway_responses(&self) -> String {
        let re = |v: &str| v.replace('.', r"\\.");
        let versions = format!("{}|{}", re(&self.s.baseline), re(&self.s.candidate));
        let (istio_ns, envoy_ns) = match &self.s.namespace {
            Some(ns) => (format!(", destination_service_namespace={ns:?}"), re(ns)),
            None => (String::new(), "[^|.]+".to_owned()),
        };
        let w = self.s.window_secs;
        format!(
            r#"sum by (version, class) (
  label_replace(label_replace(
    increase(istio_requests_total{{reporter="source", destination_service_name=~".+-app", destination_version=~"{versions}"{istio_ns}}}[{w}s]),
    "version", "$1", "destination_version", "(.+)"),
    "class", "$1", "response_code", "([1-5]).."))
or
sum by (version, class) (
  label_replace(label_replace(
    increase(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"outbound\\|[0-9]+\\|({versions})\\|[^|.]+-app\\.{envoy_ns}\\.svc\\..+"}}[{w}s]),
    "version", "$1", "envoy_cluster_name", "outbound\\|[0-9]+\\|([^|]+)\\|.+"),
    "class", "$1", "envoy_response_code_class", "(.+)"))"#
        )
    }

    /// Whether `metric{matchers}` already had a series `min_duration` ago.
    pub(super) async fn existed_before(&self, prom: &impl Counts, metric: &str, matchers: &[&str]) -> Result<bool> {
        if self.s.min_duration_secs == 0 {
            return Ok(true);
        }
        let q = format!("count({metric}{} offset {}s)", self.sel(matchers), self.s.min_duration_secs);
        Ok(!prom.counts(&q).await?.is_empty())
    }
}
