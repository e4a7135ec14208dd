"""SMS app / Experiment: the canary app v2 (prediction cache) against the stable v1, the shadow
model v2 against the serving v1, the verdict's inputs over the decision window, and drift."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

import drift
import metrics as m
from promql import quantile, select, share, sum_rate
from shared import Row, dashboard, query, timeseries

VERSION = "{{version}}"
MODEL = "{{version}} ({{source}})"


def cache_hit_ratio() -> str:
    """Hits over look-ups per version; 0 where the cache is off (no look-ups at all)."""
    hits = sum_rate("version", m.CACHE_HITS)
    lookups = f"{hits} + {sum_rate('version', m.CACHE_MISSES)}"
    return f"{hits} / ({lookups} > 0) or {hits} * 0"


def canary_row() -> Row:
    return Row("Canary experiment: app v1 (stable) vs v2 (canary, prediction cache)", [
        timeseries("Throughput", "SMS messages classified per second by each app version.", "reqps",
                   [query(sum_rate("version", m.MESSAGES_CLASSIFIED), VERSION)], width=8),
        timeseries("Error %", "Share of requests answered with a 5xx status. The decision rule: v2 must not be "
                   "higher than v1.", "percentunit",
                   [query(share("version", m.REQUESTS, 'status=~"5.."'), VERSION)], width=8),
        timeseries("p95 response time", "95th percentile of the app's request latency (user routes), by version. "
                   "The cache should lower v2's.", "s",
                   [query(quantile(0.95, "version", m.REQUEST_LATENCY), VERSION)], width=8),
        timeseries("Cache hit ratio", "Share of cache look-ups answered from the prediction cache (v2's feature; "
                   "v1 has no cache and shows 0).", "percentunit",
                   [query(cache_hit_ratio(), VERSION)], width=8, max_value=1),
        timeseries("Model calls", "gRPC calls to the model tier per second, by app version.", "reqps",
                   [query(sum_rate("version", m.MODEL_CALLS), VERSION)], width=8),
        timeseries("Model calls per classification", "Model calls divided by messages classified: 1 without a "
                   "cache; the canary's cache should bring v2 below 1.", "short",
                   [query(f"{sum_rate('version', m.MODEL_CALLS)} / {sum_rate('version', m.MESSAGES_CLASSIFIED)}",
                          VERSION)], width=8, decimals=2),
        timeseries("Guess agreement rate", "Share of users' guesses that agree with the model's answer, by app "
                   "version.", "percentunit",
                   [query(share("version", m.GUESSES, 'agreement="agree"'), VERSION)],
                   width=24, height=7, max_value=1),
    ])


def shadow_row() -> Row:
    return Row("Shadow launch: model v1 (source=app, serving) vs v2 (source=shadow, mirrored)", [
        timeseries("Prediction rate", "Predictions per second; the shadow gets the mirrored share of the serving "
                   "model's calls.", "reqps",
                   [query(sum_rate("version, source", m.MODEL_PREDICTIONS, f'source="{source}"'), MODEL)
                    for source in ("app", "shadow")], width=8),
        timeseries("Spam share", "Share of predictions that are spam. On the same mirrored inputs a large gap "
                   "between v1 and v2 means the models disagree.", "percentunit",
                   [query(share("version, source", m.MODEL_PREDICTIONS, 'result="spam"'), MODEL)],
                   width=8, max_value=1),
        timeseries("Inference latency p95", "95th percentile of one prediction's inference time, by model.", "s",
                   [query(quantile(0.95, "version, source", m.MODEL_INFERENCE), MODEL)], width=8),
    ])


def verdict_row() -> Row:
    return Row("Verdict inputs over the decision window (recorded by grafana/rules/sms-experiment.rules.yml; "
               "the verdict itself: make experiment)", [
        timeseries("Error share, 1d (canary rule 3)", "Share of users' requests answered 5xx per app version over "
                   "the decision window; the verdict (make experiment) puts an always-valid interval on the "
                   "difference.", "percentunit", [query(select(m.ERROR_SHARE_1D), VERSION)],
                   width=12, max_value=1),
        timeseries("Guess agreement, 1d (canary rule 4)", "Share of users' guesses that agree with the answer "
                   "shown, per app version, over the decision window.", "percentunit",
                   [query(select(m.GUESS_AGREEMENT_1D), VERSION)], width=12, max_value=1),
        timeseries("Model calls per classification, 1d (canary rule 1)", "The canary's primary figure over the "
                   "decision window: v2 must need at most 0.8 times v1's calls.", "short",
                   [query(select(m.MODEL_CALLS_PER_CLASSIFICATION_1D), VERSION)], width=12),
        timeseries("p95 response time, 1d (canary rule 2)", "95th percentile of users' requests per app version "
                   "over the decision window.", "s", [query(select(m.REQUEST_LATENCY_P95_1D), VERSION)], width=12),
    ])


def build() -> dash.Dashboard:
    return dashboard("sms-app-experiment", "SMS app / Experiment",
                     "Continuous experiment: the canary app v2 (prediction cache) against the stable v1, and the "
                     "shadow model v2 against the serving v1. See docs/experiment.md.",
                     [canary_row(), shadow_row(), verdict_row(), drift.row()])
