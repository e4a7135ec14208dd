//! A minimal client of the Prometheus HTTP API: instant queries, each under a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub struct Prometheus {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

/// One series of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: String,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Prometheus { http, base: base.trim_end_matches('/').to_owned(), timeout })
    }

    /// Evaluates `promql` now. The query is POSTed as a form, so long expressions are fine,
    /// and Prometheus is told the same deadline so it stops work nobody waits for.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let url = format!("{}/api/v1/query", self.base);
        let timeout = format!("{}ms", self.timeout.as_millis());
        let resp = self
            .http
            .post(&url)
            .form(&[("query", promql), ("timeout", timeout.as_str())])
            .send()
            .await
            .with_context(|| format!("Prometheus at {} did not answer", self.base))?;
        let status = resp.status();
        let body: Response =
            resp.json().await.with_context(|| format!("{url} answered HTTP {status} without a Prometheus API body"))?;
        if body.status != "success" {
            bail!("Prometheus refused `{promql}`: {}", body.error);
        }
        let data = body.data.context("Prometheus answered without data")?;
        if data.result_type != "vector" {
            bail!("`{promql}` gave a {}, not an instant vector", data.result_type);
        }
        data.result
            .into_iter()
            .map(|s| {
                let value = parse_value(&s.value.1).with_context(|| format!("value of `{promql}`"))?;
                Ok(Sample { labels: s.metric, value })
            })
            .collect()
    }
}

/// Prometheus writes sample values as strings, including `NaN` and `+Inf`.
fn parse_value(text: &str) -> Result<f64> {
    Ok(match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse()?,
    })
}
