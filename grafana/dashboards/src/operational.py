"""SMS app / Operational: is the platform healthy? The app's requests, errors and latency,
the model tier's predictions and load, refused connections, and the SLOs' error budgets."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

import metrics as m
from promql import quantile, select, share, sum_by, sum_rate
from shared import Row, dashboard, query, timeseries

ALERT_LINE = GraphThresholdsStyleMode.LINE_AND_AREA
QUANTILES = (0.5, 0.95, 0.99)
# The scrape targets of the chart's ServiceMonitors: job = the Service's name (the chart
# renames them for another release).
APP_AND_MODEL_JOBS = 'job=~"sms-app-app|sms-app-model"'


def per_minute(labels: str) -> str:
    """Messages classified per minute (the unit of the HighRequestRate alert)."""
    return f"{sum_rate(labels, m.MESSAGES_CLASSIFIED)} * 60"


def app_row() -> Row:
    return Row("App service (all versions)", [
        timeseries("Request rate", "HTTP requests per second served by the app, by version and status code.",
                   "reqps", [query(sum_rate("version, status", m.REQUESTS), "{{version}} {{status}}")], width=12),
        timeseries("Error ratio (5xx)",
                   "Share of the app's HTTP requests answered with a 5xx status, by version. "
                   "The AppHighErrorRatio alert fires above 5% for 5 minutes.",
                   "percentunit", [query(share("version", m.REQUESTS, 'status=~"5.."'), "{{version}}")],
                   width=12, thresholds=(("green", None), ("red", 0.05)), threshold_style=ALERT_LINE),
        timeseries("Active requests", "HTTP requests the app is handling right now, by version.", "short",
                   [query(sum_by("version", select(m.ACTIVE_REQUESTS)), "{{version}}")], width=8),
        timeseries("Request latency p50 / p95 / p99",
                   "App request latency quantiles (user routes; scrapes and probes excluded), by version. "
                   "AppHighLatencyP95 fires when p95 stays above 500 ms for 10 minutes.",
                   "s", [query(quantile(q, "version", m.REQUEST_LATENCY), f"p{q * 100:g} {{{{version}}}}")
                         for q in QUANTILES],
                   width=16, thresholds=(("green", None), ("red", 0.5)), threshold_style=ALERT_LINE),
        timeseries("Classifications per minute",
                   "SMS messages classified per minute, by version and result, and in total. "
                   "HighRequestRate fires when the total stays above 15 a minute for 2 minutes.",
                   "cpm", [query(per_minute("version, result"), "{{version}} {{result}}"),
                           query(per_minute("namespace"), "all versions")],
                   width=12, thresholds=(("green", None), ("red", 15)), threshold_style=ALERT_LINE),
        timeseries("Model calls by outcome",
                   "gRPC calls from the app to the model tier per second, by app version and outcome "
                   "(ok, error, timeout, unavailable). ModelCallsFailing fires when more than 5% are not ok.",
                   "reqps", [query(sum_rate("version, outcome", m.MODEL_CALLS), "{{version}} {{outcome}}")], width=12),
    ])


def model_row() -> Row:
    return Row("Model service (serving v1 and shadow v2)", [
        timeseries("Prediction rate by result",
                   "Predictions per second made by each model, by version, source (app = serving, "
                   "shadow = mirror target) and result.",
                   "reqps", [query(sum_rate("version, source, result", m.MODEL_PREDICTIONS),
                                   "{{version}} ({{source}}) {{result}}")], width=12),
        timeseries("Inference latency p50 / p95 / p99",
                   "Time the ONNX model takes for one prediction, by version and source.",
                   "s", [query(quantile(q, "version, source", m.MODEL_INFERENCE),
                               f"p{q * 100:g} {{{{version}}}} ({{{{source}}}})") for q in QUANTILES], width=12),
        timeseries("In-flight requests", "gRPC requests each model is working on right now.", "short",
                   [query(sum_by("version, source", select(m.MODEL_INFLIGHT)), "{{version}} ({{source}})")],
                   width=8),
        timeseries("gRPC requests by code", "gRPC requests per second answered by each model, by status code.",
                   "reqps", [query(sum_rate("version, source, code", m.MODEL_REQUESTS),
                                   "{{version}} ({{source}}) {{code}}")], width=8),
        timeseries("Scrape targets up",
                   "1 when Prometheus scraped the pod's /metrics successfully. "
                   "AppServiceDown / ModelServiceDown / ShadowModelDown fire on 0.",
                   "bool_yes_no", [query(select(m.UP, APP_AND_MODEL_JOBS), "{{job}} {{pod}}")],
                   width=8, max_value=1),
        timeseries("Connections refused over MAX_CONNECTIONS",
                   "Connections a listener refused because it already held MAX_CONNECTIONS: the app answers "
                   "them 503 with Retry-After before reading a request (they are not in the request rate), "
                   "the model closes them (callers see UNAVAILABLE). Anything above 0 is a client count the "
                   "pods were not sized for.",
                   "reqps", [query(sum_rate("version", m.REFUSED_CONNECTIONS), "app {{version}}"),
                             query(sum_rate("version, source, listener", m.MODEL_REFUSED_CONNECTIONS),
                                   "model {{version}} ({{source}}) {{listener}}")], width=24),
    ])


def burn_rate(windows: tuple[str, ...]) -> str:
    """Each SLO's burn rate over Sloth's windows: its error ratio over its error budget."""
    names = "|".join(m.slo_error_ratio(w) for w in windows)
    return (f'max by (sloth_slo, sloth_window) ({{__name__=~"{names}", namespace="$namespace"}}'
            f" / on (sloth_id) group_left {m.SLO_ERROR_BUDGET})")


def slo_row() -> Row:
    page, ticket = ("5m", "1h", "30m", "6h"), ("2h", "1d", "6h", "3d")
    return Row("Service level objectives (grafana/slos/, rules by Sloth)", [
        timeseries("Error budget remaining (30 days)",
                   "Share of each SLO's 30-day error budget not yet spent (Sloth's "
                   "slo:period_error_budget_remaining:ratio; below 0 the objective is missed for the period). "
                   "SLOs: app availability 99.9% (users' requests not 5xx), app latency 99% (within 250 ms), "
                   "model availability 99.9% (no server-side gRPC error), model inference 99% (within 50 ms); "
                   "grafana/slos/sms-app.slo.yml.",
                   "percentunit", [query(f"max by (sloth_slo) ({select(m.SLO_BUDGET_REMAINING)})", "{{sloth_slo}}")],
                   width=12, thresholds=(("red", None), ("orange", 0), ("green", 0.25)), threshold_style=ALERT_LINE,
                   min_value=None),
        timeseries("Burn rate now (5m) and over 30 days",
                   "How fast each SLO spends its error budget: 1 spends exactly the budget in 30 days, 14.4 "
                   "spends 2% of it in an hour (Sloth's slo:current_burn_rate:ratio over 5 minutes, "
                   "slo:period_burn_rate:ratio over the period).",
                   "none", [query(f"max by (sloth_slo) ({select(m.SLO_CURRENT_BURN_RATE)})", "{{sloth_slo}} 5m"),
                            query(f"max by (sloth_slo) ({select(m.SLO_PERIOD_BURN_RATE)})", "{{sloth_slo}} 30d")],
                   width=12, thresholds=(("green", None), ("orange", 1), ("red", 14.4)), threshold_style=ALERT_LINE),
        timeseries("Burn rate, page windows",
                   "Each SLO's burn rate over the windows its page (severity critical) looks at: it fires when "
                   "5m and 1h are both above 14.4, or 30m and 6h both above 6.",
                   "none", [query(burn_rate(page), "{{sloth_slo}} {{sloth_window}}")],
                   width=12, thresholds=(("green", None), ("orange", 6), ("red", 14.4)), threshold_style=ALERT_LINE),
        timeseries("Burn rate, ticket windows",
                   "Each SLO's burn rate over the windows its ticket (severity warning) looks at: it fires when "
                   "2h and 1d are both above 3, or 6h and 3d both above 1.",
                   "none", [query(burn_rate(ticket), "{{sloth_slo}} {{sloth_window}}")],
                   width=12, thresholds=(("green", None), ("orange", 1), ("red", 3)), threshold_style=ALERT_LINE),
    ])


def build() -> dash.Dashboard:
    return dashboard("sms-app-operational", "SMS app / Operational",
                     "Health of the SMS spam detection platform: app request rate, errors, latency; "
                     "model predictions, inference latency, load.",
                     [app_row(), model_row(), slo_row()])

