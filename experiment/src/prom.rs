//! A minimal client of the Prometheus HTTP API: instant queries, each under a deadline, whose
//! answers are checked before anything is computed from them.
//!
//! The verdict decides a rollout, so a Prometheus (or a proxy in front of it) that answers
//! nonsense must give an error, never a verdict. Every answer is bounded while it streams in
//! ([`MAX_BODY_BYTES`], [`MAX_SERIES`]), the whole call, body included, is bounded by the
//! deadline, and every number is checked ([`MAX_VALUE`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Largest answer read (4 MiB). The verdict's answers are a few dozen series, a few KiB; a
/// longer body is refused as soon as it passes this bound, while it streams in.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most series one answer may hold. The largest real answer is two versions x two sources x
/// the buckets of one histogram (or the HTTP statuses / gRPC codes seen): under a hundred.
pub const MAX_SERIES: usize = 1000;
/// Largest number believed. Every query of the verdict returns counts (`increase()` of
/// counters and of histogram buckets, `count()` of series); a million events a second for
/// thirty years is under 1e15. With [`MAX_SERIES`], every sum stays under 1e18.
pub const MAX_VALUE: f64 = 1e15;
/// Longest piece of a text from Prometheus (an error, a label) put in a message.
const MAX_SHOWN_CHARS: usize = 200;

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
    #[serde(deserialize_with = "at_most_max_series")]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// The `result` list, refused as soon as it holds more than [`MAX_SERIES`] series.
fn at_most_max_series<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Series>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<Series>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_SERIES} series")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Series>, A::Error> {
            let mut out = Vec::new();
            while let Some(series) = seq.next_element()? {
                if out.len() == MAX_SERIES {
                    return Err(de::Error::custom(format!("more than {MAX_SERIES} series")));
                }
                out.push(series);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// Where the rules read their counts: a live Prometheus, or (the tests) answers one
/// recorded, asked by the same query text.
pub trait Counts {
    fn counts(&self, promql: &str) -> impl std::future::Future<Output = Result<Vec<Sample>>> + Send;
}

impl Counts for Prometheus {
    fn counts(&self, promql: &str) -> impl std::future::Future<Output = Result<Vec<Sample>>> + Send {
        Prometheus::counts(self, promql)
    }
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        // No client-wide timeout: `counts` puts the deadline around the whole call.
        let http = reqwest::Client::builder().connect_timeout(timeout).build().context("building the HTTP client")?;
        Ok(Prometheus { http, base: base.trim_end_matches('/').to_owned(), timeout })
    }

    /// Evaluates `promql`, a query whose every value is a count, now. The query is POSTed
    /// as a form, so long expressions are fine, and Prometheus is told the same deadline so
    /// it stops work nobody waits for. Connecting, sending, reading and checking the answer
    /// ([`read_counts`]) all happen within the deadline.
    pub async fn counts(&self, promql: &str) -> Result<Vec<Sample>> {
        tokio::time::timeout(self.timeout, self.fetch(promql)).await.map_err(|_| {
            anyhow!(
                "Prometheus at {} did not answer `{promql}` within the deadline of {} s (--timeout)",
                self.base,
                self.timeout.as_secs_f64()
            )
        })?
    }

    /// Sends the query, reads the answer, chunk by chunk, up to [`MAX_BODY_BYTES`], and
    /// checks it.
    async fn fetch(&self, promql: &str) -> Result<Vec<Sample>> {
        let url = format!("{}/api/v1/query", self.base);
        let timeout = format!("{}ms", self.timeout.as_millis());
        let mut resp = self
            .http
            .post(&url)
            .form(&[("query", promql), ("timeout", timeout.as_str())])
            .send()
            .await
            .with_context(|| format!("Prometheus at {} did not answer", self.base))?;
        let status = resp.status();
        let too_long = || {
            anyhow!(
                "Prometheus' answer to `{promql}` is longer than {} MiB (the bound of an answer); refused",
                MAX_BODY_BYTES >> 20
            )
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.with_context(|| format!("reading Prometheus' answer to `{promql}`"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        read_counts(promql, &body).map_err(|e| {
            if e.is::<serde_json::Error>() {
                e.context(format!("{url} answered `{promql}` with HTTP {status} and no valid Prometheus API body"))
            } else {
                e
            }
        })
    }
}

/// The body of Prometheus' answer to `promql` as counts, once checked: it must be an
/// instant vector of at most [`MAX_SERIES`] series, each value a count in
/// `[0, MAX_VALUE]` and each histogram bucket bound (`le`) `+Inf` or such a number. What
/// [`Prometheus::counts`] makes of the body it read (and what tests give recorded answers to).
pub fn read_counts(promql: &str, body: &[u8]) -> Result<Vec<Sample>> {
    let answer: Response = serde_json::from_slice(body)?;
    if answer.status != "success" {
        bail!("Prometheus refused `{promql}`: {}", shown(&answer.error));
    }
    let data = answer.data.with_context(|| format!("Prometheus answered `{promql}` without data"))?;
    if data.result_type != "vector" {
        bail!("`{promql}` gave a {}, not an instant vector", shown(&data.result_type));
    }
    data.result
        .into_iter()
        .map(|s| {
            check_series(&s).with_context(|| {
                format!("Prometheus answered `{promql}` with a value that cannot be trusted; no verdict")
            })?;
            let value = parse_count(&s.value.1).with_context(|| {
                format!(
                    "Prometheus answered `{promql}` with a value that cannot be trusted for {}; no verdict",
                    shown_labels(&s.metric)
                )
            })?;
            Ok(Sample { labels: s.metric, value })
        })
        .collect()
}

/// A histogram bucket bound, if the series has one, is `+Inf` or a count-like number.
fn check_series(s: &Series) -> Result<()> {
    if let Some(le) = s.metric.get("le")
        && le != "+Inf"
    {
        let bound: f64 = le.parse().map_err(|_| anyhow!("bucket bound le={} is not a number", shown(le)))?;
        check_number(bound).with_context(|| format!("bucket bound of {}", shown_labels(&s.metric)))?;
    }
    Ok(())
}

/// Prometheus writes sample values as strings, including `NaN` and `+Inf`; every value the
/// verdict reads is a count.
fn parse_count(text: &str) -> Result<f64> {
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().map_err(|_| anyhow!("{} is not a number", shown(text)))?,
    };
    check_number(value)?;
    Ok(value)
}

fn check_number(value: f64) -> Result<()> {
    if value.is_nan() {
        bail!("NaN is not a count");
    }
    if value.is_infinite() {
        bail!("{value} is not a count");
    }
    if value < 0.0 {
        bail!("a negative count ({value:?}): increase() and count() are never negative");
    }
    if value > MAX_VALUE {
        bail!("an absurd count ({value:e}): the bound is {MAX_VALUE:e}");
    }
    Ok(())
}

/// A text from Prometheus as it may appear in a message: control characters escaped,
/// at most [`MAX_SHOWN_CHARS`] characters.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_SHOWN_CHARS).flat_map(char::escape_debug).collect();
    if text.chars().nth(MAX_SHOWN_CHARS).is_some() {
        out.push_str(&format!("... ({} bytes)", text.len()));
    }
    out
}

/// A series' labels for a message: the first few, each [`shown`].
fn shown_labels(labels: &BTreeMap<String, String>) -> String {
    const MAX_LABELS: usize = 10;
    let mut all: Vec<String> =
        labels.iter().take(MAX_LABELS).map(|(k, v)| format!("{}=\"{}\"", shown(k), shown(v))).collect();
    if labels.len() > MAX_LABELS {
        all.push(format!("... ({} labels)", labels.len()));
    }
    format!("{{{}}}", all.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_finite_non_negative_and_believable() {
        assert_eq!(parse_count("12345.5").unwrap(), 12345.5);
        assert_eq!(parse_count("0").unwrap(), 0.0);
        for bad in ["-100000", "NaN", "+Inf", "-Inf", "1e308", "2e15", "twelve", ""] {
            assert!(parse_count(bad).is_err(), "{bad} was taken for a count");
        }
        let err = format!("{:#}", parse_count("-100000").unwrap_err());
        assert!(err.contains("negative count"), "{err}");
    }

    #[test]
    fn texts_from_prometheus_are_escaped_and_cut() {
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 250 && s.ends_with("(10000 bytes)"), "{s}");
    }

    #[test]
    fn an_answer_with_too_many_series_is_refused_while_parsing() {
        let series = r#"{"metric":{},"value":[1,"1"]}"#;
        let body = |n: usize| {
            let list = vec![series; n].join(",");
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{list}]}}}}"#)
        };
        let ok: Response = serde_json::from_str(&body(MAX_SERIES)).unwrap();
        assert_eq!(ok.data.unwrap().result.len(), MAX_SERIES);
        let err = serde_json::from_str::<Response>(&body(MAX_SERIES + 1)).err().unwrap();
        assert!(err.to_string().contains("more than 1000 series"), "{err}");
    }
}
