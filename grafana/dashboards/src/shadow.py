"""SMS app / Shadow vs Stable (model service): the shadow model (source=shadow, mirrored
calls) against the serving model (source=app) on the same messages, and drift."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

import drift
import metrics as m
from promql import quantile, select, share, sum_rate
from shared import Row, dashboard, query, timeseries

PAIR = "{{version}} vs {{reference_version}}"
MODEL = "{{version}} ({{source}})"
SHADOW = 'source="shadow"'  # only the shadow compares itself with the serving version


def agreement_row() -> Row:
    return Row("Agreement on the same messages", [
        timeseries("Agreement with the serving model", "Share of mirrored messages on which the shadow gives the "
                   "serving model's label (both score the same text).", "percentunit",
                   [query(share("version, reference_version", m.SHADOW_COMPARISONS, 'outcome="agree"', SHADOW),
                          PAIR)], width=8, max_value=1),
        timeseries("Agreement over the decision window (1d)", "The recorded figure the shadow rule and the "
                   f"ShadowDisagreementHigh alert read ({m.SHADOW_AGREEMENT_1D}).", "percentunit",
                   [query(select(m.SHADOW_AGREEMENT_1D), PAIR)], width=8, max_value=1),
        timeseries("Disagreements", "Mirrored messages per second on which the two models' labels differ; "
                   "`grpcurl ... sms.v1.SpamClassifier/ListDisagreements` on the shadow lists the latest.", "reqps",
                   [query(sum_rate("version, reference_version", m.SHADOW_COMPARISONS, SHADOW, 'outcome="disagree"'),
                          PAIR)], width=8),
        timeseries("Probability gap |p_shadow - p_serving|", "Quantiles of how far apart the two models' spam "
                   "probabilities are on the same message: small gaps are noise, large ones real disagreements.",
                   "percentunit", [query(quantile(q, "version", m.SHADOW_PROBABILITY_GAP, SHADOW),
                                         f"p{q * 100:g} {{{{version}}}}") for q in (0.5, 0.9, 0.99)],
                   width=8, max_value=1),
        timeseries("Agreement with users' guesses", "Share of calls carrying a user's guess on which each model's "
                   "answer agrees with it; the shadow's is measured although users never see its answers.",
                   "percentunit", [query(share("version, source", m.MODEL_GUESSES, 'agreement="agree"'), MODEL)],
                   width=8, max_value=1),
        timeseries("Prediction rate", "Messages classified per second by each model (the shadow's rate is the "
                   "mirror percentage of the serving model's).", "reqps",
                   [query(sum_rate("version, source", m.MODEL_PREDICTIONS), MODEL)], width=8),
    ])


def cost_row() -> Row:
    return Row("Cost and failures of both", [
        timeseries("Inference latency p95", "95th percentile of the time ONNX Runtime spends on one message, per "
                   "model.", "s", [query(quantile(0.95, "version, source", m.MODEL_INFERENCE), MODEL)], width=12),
        timeseries("Server error share", "Share of Classify calls each model answered with a gRPC error (any code "
                   "but Ok).", "percentunit",
                   [query(share("version, source", m.MODEL_REQUESTS, 'code!="Ok"'), MODEL)], width=12, max_value=1),
    ])


def build() -> dash.Dashboard:
    return dashboard("sms-app-shadow-vs-stable", "SMS app / Shadow vs Stable (model service)",
                     "The shadow model (source=shadow, mirrored calls) against the serving model (source=app) on "
                     "the same messages: agreement, how far apart their probabilities are, agreement with users' "
                     "guesses, latency and errors. See docs/experiment.md.",
                     [agreement_row(), cost_row(), drift.row()])
