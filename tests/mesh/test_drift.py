"""Prediction drift on the local mesh: the data set's held-out messages sent through the real
gateway by `make mesh-traffic`'s generator, scored by model v1 (serving) and v2 (the shadow,
every call mirrored), scraped by the mesh's Prometheus with the chart's rules
(grafana/rules/sms-drift.rules.yml as the PrometheusRule renders it).

On a mesh of its own (fresh counters), in this order:

1. the test split's mix (`--mix split`, the default) keeps the 1-hour PSI of both versions'
   spam probabilities under 0.1, the spam share within 5 points of the card's, and
   PredictionDrift quiet;
2. then twice as many spam-only messages (`--mix spam-only`) drive both PSIs above 0.2 and
   PredictionDrift fires in this Prometheus for both versions: first pending, then firing
   once its hold has passed. The chart's rule holds for 30 minutes; this mesh sets the
   hold to 20 s with the chart's own setting (`monitoring.prometheusRule.alertFor`), the
   expression unchanged. That the shipped rule fires after 30 minutes (and not before) is
   the promtool test's (grafana/rules/sms-drift.rules.test.yml);
3. the drift panels of the experiment and Shadow vs Stable dashboards show both versions.

Each step writes its figures to test-output/mesh/figures.txt."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from harness import HOST, OUT, ROOT, Stack, poll, report
from smsdev.mesh import traffic  # the generator of `make mesh-traffic`
from smsdev.promtext import samples

DRIFT_HOLD_S = 20
SETS = ("modelService.shadow.mirror.percent=100",
        f"monitoring.prometheusRule.alertFor.PredictionDrift={DRIFT_HOLD_S}s")
PSI = "namespace_version:sms_model_spam_probability_psi:rate1h"
SHIFT = "namespace_version:sms_model_spam_share_shift:ratio_rate1h"
COUNT = "sms_model_spam_probability_count"


@pytest.fixture(scope="module")
def drift():
    split = Path(os.environ.get("MESH_TEST_SPLIT", ROOT / ".cache" / "data" / "test-split.jsonl"))
    assert split.is_file(), f"{split} missing: tests/mesh/run.sh writes it (scripts/ensure-test-split.sh)"
    s = Stack(OUT / "drift", prometheus=True)
    try:
        s.use(*SETS)
        poll(s.scraped, 60, "Prometheus scraping every process of the mesh")
        s.messages = traffic.load_messages(split)
        yield s
    finally:
        s.stop()


def send(s, count: int, mix: str) -> traffic.Summary:
    out = traffic.run(s.gateway, HOST, s.messages, duration=180, count=count, concurrency=8, mix=mix, seed=3)
    report(f"  --mix {mix}: " + out.text().replace("\n", "\n  "))
    assert out.status == {200: count}, out.text()
    return out


def scored_on_pages(s) -> dict:
    """Messages each model version scored, from the model services' own pages."""
    out: dict = {}
    for w in s.mesh.workloads.values():
        for name, labels, value in samples(requests.get(w.metrics_url, timeout=5).text):
            if name == COUNT:
                out[labels["version"]] = out.get(labels["version"], 0) + value
    return out


def settle(s) -> dict:
    """Waits until Prometheus holds every model's final counts and the rules have evaluated
    on them; returns {version: PSI}."""
    want = scored_on_pages(s)
    assert set(want) == {"v1", "v2"}, want

    def caught_up():
        have = {r["metric"]["version"]: float(r["value"][1]) for r in s.query(f"sum by (version) ({COUNT})")}
        return have == want
    poll(caught_up, 30, "Prometheus to scrape the final counts")
    # Rules evaluate every second here; a few more rounds so that the PSI saw the last scrape.
    time.sleep(3)
    psi = {r["metric"]["version"]: float(r["value"][1]) for r in s.query(PSI)}
    shift = {r["metric"]["version"]: float(r["value"][1]) for r in s.query(SHIFT)}
    report(f"  scored: {', '.join(f'{v} {n:,.0f}' for v, n in sorted(want.items()))}; PSI (1h): "
           f"{', '.join(f'{v} {p:.3f}' for v, p in sorted(psi.items()))}; spam share shift (1h): "
           f"{', '.join(f'{v} {x * 100:+.1f} pp' for v, x in sorted(shift.items()))}")
    s.shift = shift
    return psi


def prediction_drift(s) -> list:
    alerts = requests.get(f"{s.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "PredictionDrift"]


def drift_alerts(s) -> dict:
    return {a["labels"]["version"]: a["state"] for a in prediction_drift(s)}


def active_since(alert) -> float:
    """The alert's activeAt (RFC 3339, nanoseconds) as a Unix time."""
    return datetime.fromisoformat(alert["activeAt"][:26].rstrip("Z") + "+00:00").timestamp()


def test_1_the_test_splits_mix_keeps_psi_under_0_1(drift):
    assert not drift.query(f"sum({COUNT}) > 0"), "this mesh has scored messages already"
    report("drift, the test split's mix (1,500 requests, mirror 100 %):")
    send(drift, 1500, "split")
    psi = settle(drift)
    assert set(psi) == {"v1", "v2"}, psi
    assert all(p < 0.1 for p in psi.values()), psi
    assert all(abs(x) < 0.05 for x in drift.shift.values()), drift.shift
    assert drift_alerts(drift) == {}


def test_2_a_spam_only_mix_drives_psi_over_0_2_and_the_alert_fires(drift):
    report("drift, then a shifted mix (3,000 spam-only requests):")
    send(drift, 3000, "spam-only")
    psi = settle(drift)
    assert set(psi) == {"v1", "v2"} and all(p > 0.2 for p in psi.values()), psi
    assert all(x > 0.2 for x in drift.shift.values()), drift.shift
    # The alert's own expression (as the chart renders it) holds for both versions: the
    # rule is pending (it may have become so during the send), then fires once the hold has
    # passed since it became active, and not before.
    poll(lambda: set(drift_alerts(drift)) == {"v1", "v2"}, 15, "PredictionDrift pending or firing for v1 and v2")
    report(f"  PredictionDrift: {drift_alerts(drift)}")
    first_firing = {}

    def both_firing():
        now = time.time()
        for a in prediction_drift(drift):
            if a["state"] == "firing" and a["labels"]["version"] not in first_firing:
                first_firing[a["labels"]["version"]] = now - active_since(a)
        return set(first_firing) == {"v1", "v2"}
    poll(both_firing, DRIFT_HOLD_S + 15, "PredictionDrift firing for v1 and v2")
    report(f"  PredictionDrift: {drift_alerts(drift)}; seen firing "
           f"{', '.join(f'{v} {t:.0f} s' for v, t in sorted(first_firing.items()))} after it became active "
           f"(hold {DRIFT_HOLD_S} s)")
    # firing no earlier than the hold (one 1 s evaluation of slack for the clocks' reading)
    assert all(t >= DRIFT_HOLD_S - 1 for t in first_firing.values()), first_firing


def drift_panels():
    """The drift panels' queries of the experiment and Shadow vs Stable dashboards."""
    for name in ("experiment", "shadow"):
        dashboard = json.loads((ROOT / "grafana" / "dashboards" / f"{name}.json").read_text())
        for panel in dashboard["panels"]:
            if any(w in panel["title"] for w in ("drift", "distribution", "shift against reference")):
                for t in panel.get("targets", []):
                    yield f"{name}: {panel['title']} ({t['legendFormat']})", t["expr"]


def test_3_the_dashboards_drift_panels_show_both_versions(drift):
    (namespace,) = {r["metric"]["namespace"] for r in drift.query(PSI)}
    panels = list(drift_panels())
    assert len(panels) >= 12, panels  # PSI 1h/1d, input PSI 1h/1d, shift 1h/1d, distribution: both dashboards
    for title, expr in panels:
        q = expr.replace("$namespace", namespace).replace("$__rate_interval", "1m")
        versions = {r["metric"].get("version") for r in drift.query(q) if r["value"][1] not in ("NaN", "+Inf", "-Inf")}
        assert {"v1", "v2"} <= versions, f"{title}: versions {versions}\nquery: {q}"
    report(f"  the dashboards' {len(panels)} drift queries return both versions")
