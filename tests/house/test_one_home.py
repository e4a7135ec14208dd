"""Facts with one home: every other place that states them is checked against it."""

from __future__ import annotations

import re

import pytest
import yaml
from repository import ROOT, tracked_text_files


def decision_thresholds() -> dict[str, float]:
    """The experiment's margins and limits, as experiment/src/rules/thresholds.rs defines them."""
    text = (ROOT / "experiment" / "src" / "rules" / "thresholds.rs").read_text()
    found = {name: float(value) for name, value in re.findall(r"^pub const (\w+): f64 = ([\d.]+);$", text, re.M)}
    assert {"CANARY_ERROR_MARGIN", "CANARY_CALLS_RATIO", "GUESS_MARGIN", "SHADOW_ERROR_MARGIN", "SHADOW_P95_LIMIT",
            "SHADOW_MIN_AGREEMENT"} <= set(found), found
    return found


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def number(x: float) -> str:
    return f"{x:g}"


def test_the_chart_gates_flagger_on_the_experiments_thresholds():
    t = decision_thresholds()
    values = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())["flagger"]["thresholds"]
    assert values["errorShareIncrease"] == t["CANARY_ERROR_MARGIN"], values
    assert values["guessAgreementGap"] == t["GUESS_MARGIN"], values


def test_the_experiment_document_states_the_thresholds_of_the_code():
    t = decision_thresholds()
    doc = flat((ROOT / "docs" / "experiment.md").read_text())
    points = lambda share: number(share * 100)
    stated = [
        f"v2's share is at most {number(t['CANARY_CALLS_RATIO'])} times v1's",
        f"`calls(v2) - {number(t['CANARY_CALLS_RATIO'])} x calls(v1) <= 0`",
        f"exceeds v1's by at most {points(t['CANARY_ERROR_MARGIN'])} percentage point. Counted as users got them",
        f"v2's agreement with users' guesses is at most {points(t['GUESS_MARGIN'])} percentage points below v1's "
        "(the cache",
        f"v2 gives v1's label to at least {points(t['SHADOW_MIN_AGREEMENT'])} % of the mirrored messages",
        f"`Cancelled`) exceeds v1's by at most {points(t['SHADOW_ERROR_MARGIN'])} percentage point",
        f"**p95 inference time**: under {number(t['SHADOW_P95_LIMIT'] * 1000)} ms",
    ]
    missing = [s for s in stated if s not in doc]
    assert not missing, "docs/experiment.md no longer states (experiment/src/rules/thresholds.rs):\n" + "\n".join(missing)


def test_the_shadow_alert_warns_at_the_agreement_the_verdict_requires():
    t = decision_thresholds()
    groups = yaml.safe_load((ROOT / "grafana" / "rules" / "sms-experiment.rules.yml").read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == "ShadowDisagreementHigh"]
    (limit,) = re.findall(r"ratio_rate30m < ([\d.]+)", rule["expr"])
    assert float(limit) == t["SHADOW_MIN_AGREEMENT"], rule["expr"]


def test_no_query_selects_users_requests_by_route():
    """The app counts users' requests only (app-service/src/middleware/observe.rs,
    `is_scrape_or_probe`), so no rule, dashboard, SLO or template repeats a route regex."""
    found = [name for name, text in tracked_text_files() if re.search(r'route!~\\?"/metrics', text)]
    assert not found, found


def test_the_bench_reads_the_models_stream_limit_and_the_charts_values_where_they_live():
    """make bench judges the model's overload by the streams a connection carries (a constant
    of model-service/src/lib.rs) and its memory and deadlines by the chart's values: it
    reads them there (tooling/smsdev/bench/facts.py), and refuses a shape it does not know
    rather than fall back on a copy."""
    from smsdev.bench import facts

    lib = (ROOT / "model-service" / "src" / "lib.rs").read_text()
    limit = facts.model_streams_per_connection()
    assert limit > 0 and ".max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)" in lib
    assert facts.model_streams_per_connection(lib.replace(f"u32 = {limit};", "u32 = 1_024;")) == 1024
    for broken in (lib.replace("const MAX_STREAMS_PER_CONNECTION", "const MAX_H2_STREAMS"),
                   lib + "\nconst MAX_STREAMS_PER_CONNECTION: u32 = 64;\n"):
        with pytest.raises(AssertionError, match="MAX_STREAMS_PER_CONNECTION"):
            facts.model_streams_per_connection(broken)

    values = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())
    assert facts.chart_model_deadline_ms(values) == values["appService"]["modelTimeoutMs"] > 0
    limits = facts.chart_memory_limits(values)
    assert set(limits) == {"app", "model"} and all(v > 0 for v in limits.values())
    values["modelService"]["resources"]["limits"]["memory"] = "1Gi"
    assert facts.chart_memory_limits(values)["model"] == 1024
    values["modelService"]["resources"]["limits"]["memory"] = "512M"
    with pytest.raises(AssertionError, match="512M"):
        facts.chart_memory_limits(values)
    del values["modelService"]["resources"]["limits"]
    with pytest.raises(AssertionError, match="modelService.resources.limits.memory"):
        facts.chart_memory_limits(values)
