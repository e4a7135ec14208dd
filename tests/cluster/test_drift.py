"""Prediction drift on a cluster of its own (fresh counters): the data set's held-out
messages sent through the ingress gateway by `make mesh-traffic`, scored by model v1
(serving) and v2 (the shadow, every call mirrored), scraped by the cluster's Prometheus
with the chart's rules as the Prometheus Operator loads its PrometheusRule. In order:

1. the test split's mix keeps the 1-hour PSI of both versions' spam probabilities under
   0.1, the spam share within 5 points of the card's, and PredictionDrift quiet;
2. twice as many spam-only messages drive both PSIs above 0.2, and PredictionDrift fires
   for both versions once its hold has passed (the chart's own setting,
   `monitoring.prometheusRule.alertFor`, sets 20 s here; the shipped 30 minutes is the
   promtool test's, grafana/rules/sms-drift.rules.test.yml);
3. the drift panels of the experiment and Shadow vs Stable dashboards show both versions."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime

import pytest

from conftest import ROOT, api, exec_in, pods, start_cluster, stop, wait

DRIFT_HOLD_S = 20
PSI = "namespace_version:sms_model_spam_probability_psi:rate1h"
SHIFT = "namespace_version:sms_model_spam_share_shift:ratio_rate1h"
COUNT = "sms_model_spam_probability_count"


@pytest.fixture(scope="module")
def drift():
    c = start_cluster("drift", "--set", "modelService.shadow.mirror.percent=100",
                      "--set", f"monitoring.prometheusRule.alertFor.PredictionDrift={DRIFT_HOLD_S}s")
    try:
        # A series appears with its first call, and what it holds at its first scrape is
        # no increase to rate(): a few calls first, scraped, before the measured ones.
        send(c, 40, "split")
        wait(lambda: set(query(c, f"sum by (version) ({COUNT})")) == {"v1", "v2"}, 60,
             "both versions' histograms in Prometheus")
        yield c
    finally:
        stop(c)


def query(c, expr: str) -> dict[str, float]:
    return {r["metric"].get("version"): float(r["value"][1]) for r in api(c, "query", query=expr)["result"]}


def send(c, count: int, mix: str) -> None:
    """`make mesh-traffic` through the cluster's gateway: `count` messages of `mix`."""
    out = subprocess.run(["bash", "scripts/mesh-traffic.sh", "--gateway", f"http://127.0.0.1:{c.gateway_port}",
                          "--host", "sms.localhost", "--count", str(count), "--duration", "300", "--concurrency", "8",
                          "--mix", mix, "--seed", "3", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=360)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    print(f"  --mix {mix}: {summary['requests']} requests in {summary['seconds']} s, {summary['by_version']}")
    assert summary["status"] == {"200": count}, summary


def scored_on_pages(c) -> dict[str, float]:
    """Messages each model version scored, from the model pods' own pages."""
    out: dict[str, float] = {}
    for p in pods(c, **{"app.kubernetes.io/component": "model"}):
        got = exec_in(c, p, "model", "curl", "-sS", "-m", "5", "http://127.0.0.1:9464/metrics")
        assert got.returncode == 0, got.stderr
        v = p["metadata"]["labels"]["version"]
        out[v] = out.get(v, 0) + sum(float(m.group(1)) for m in
                                     re.finditer(rf"^{COUNT}{{[^}}]*}} (\S+)$", got.stdout, re.M))
    return out


def settle(c) -> tuple[dict, dict]:
    """Until Prometheus holds every model's final counts and the rules have evaluated on
    them twice (every 15 s); returns the PSI and the spam share's shift by version."""
    want = scored_on_pages(c)
    assert set(want) == {"v1", "v2"}, want
    wait(lambda: query(c, f"sum by (version) ({COUNT})") == want, 60, "Prometheus to scrape the final counts")
    time.sleep(31)
    psi, shift = query(c, PSI), query(c, SHIFT)
    print(f"  scored {want}; PSI (1h) {psi}; spam share shift (1h) {shift}")
    return psi, shift


def drift_alerts(c) -> list[dict]:
    return [a for a in api(c, "alerts")["alerts"] if a["labels"]["alertname"] == "PredictionDrift"]


def active_since(alert: dict) -> float:
    """The alert's activeAt (RFC 3339, nanoseconds) as a Unix time."""
    return datetime.fromisoformat(alert["activeAt"][:26].rstrip("Z") + "+00:00").timestamp()


def test_1_the_test_splits_mix_keeps_psi_under_0_1(drift):
    print("drift, the test split's mix (1,500 requests, mirror 100 %):")
    send(drift, 1500, "split")
    psi, shift = settle(drift)
    assert set(psi) == {"v1", "v2"} and all(p < 0.1 for p in psi.values()), psi
    assert all(abs(x) < 0.05 for x in shift.values()), shift
    assert drift_alerts(drift) == []


def test_2_a_spam_only_mix_drives_psi_over_0_2_and_the_alert_fires(drift):
    print("drift, then a shifted mix (3,000 spam-only requests):")
    send(drift, 3000, "spam-only")
    psi, shift = settle(drift)
    assert set(psi) == {"v1", "v2"} and all(p > 0.2 for p in psi.values()), psi
    assert all(x > 0.2 for x in shift.values()), shift
    first_firing: dict[str, float] = {}

    def both_firing():
        now = time.time()
        for a in drift_alerts(drift):
            if a["state"] == "firing" and a["labels"]["version"] not in first_firing:
                first_firing[a["labels"]["version"]] = now - active_since(a)
        return set(first_firing) == {"v1", "v2"}
    wait(both_firing, DRIFT_HOLD_S + 60, "PredictionDrift firing for v1 and v2")
    print(f"  PredictionDrift firing for both, seen {first_firing} s after it became active (hold {DRIFT_HOLD_S} s)")
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
    panels = list(drift_panels())
    assert len(panels) >= 12, panels  # PSI 1h/1d, input PSI 1h/1d, shift 1h/1d, distribution: both dashboards
    for title, expr in panels:
        q = expr.replace("$namespace", "sms-app").replace("$__rate_interval", "1m")
        result = api(drift, "query", query=q)["result"]
        versions = {r["metric"].get("version") for r in result if r["value"][1] not in ("NaN", "+Inf", "-Inf")}
        assert {"v1", "v2"} <= versions, f"{title}: versions {versions}\nquery: {q}"
    print(f"  the dashboards' {len(panels)} drift queries return both versions")
