"""The cluster's Prometheus, made by the Prometheus Operator from the chart's own
ServiceMonitors, PodMonitor and PrometheusRule: it scrapes the release's pods through
Kubernetes service discovery, evaluates the chart's rules, and the experiment's verdict
reads it."""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, Visitors, api, wait


# Every pod of the release (the canary's and the shadow's too) and the ingress gateway: the
# operator picks the gateway's PodMonitor (another namespace) up later than the
# ServiceMonitors, tens of seconds after the cluster is ready.
SCRAPE_POOLS = ("serviceMonitor/sms-app/sms-app-app/0", "serviceMonitor/sms-app/sms-app-model/0",
                "podMonitor/sms-app/sms-app-gateway/0")


def all_scraped(cluster) -> dict:
    """Waits until every scrape pool of the chart has all its targets up; returns them."""
    last_targets: list = []

    def up():
        targets = api(cluster, "targets")["activeTargets"]
        last_targets[:] = [(t["labels"].get("pod"), t["health"], t["lastError"][:80]) for t in targets]
        pools = {}
        for t in targets:
            pools.setdefault(t["scrapePool"], []).append(t["health"])
        return pools if all(pools.get(p) and all(h == "up" for h in pools[p]) for p in SCRAPE_POOLS) else None

    try:
        return wait(up, 120, "the app's, the model's and the gateway's pods scraped")
    except AssertionError as e:
        raise AssertionError(f"{e}; targets: {last_targets}") from None


def test_the_operator_turns_the_charts_objects_into_scrapes_and_rules(cluster):
    pools = all_scraped(cluster)
    print({p: f"{h.count('up')}/{len(h)} up" for p, h in pools.items()})
    groups = api(cluster, "rules")["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    print(f"{len(groups)} rule groups, {len(alerts)} alerts loaded from the chart's PrometheusRule")
    assert {"CanaryWorseThanStable", "PredictionDrift", "AppAvailabilityBudgetBurn"} <= alerts, sorted(alerts)


def test_the_experiments_verdict_reads_the_cluster_prometheus(cluster):
    all_scraped(cluster)  # the gateway's answers too, from the visitors' first
    # What users got from the gateway per version, as the guardrails read it
    # (CanaryUnreachable, the gateway's side of the user error share): the chart's
    # PodMonitor keeps the gateway's own per-subset counts (its stock Envoy has no
    # istio_requests_total), which the rules turn into answers/s per version and class.
    def gateway_answers():
        out = api(cluster, "query", query='sum by (version, class) '
                                          '(namespace_version_class:sms_gateway_responses:rate5m{namespace="sms-app"})')
        got = {(r["metric"]["version"], r["metric"]["class"]): float(r["value"][1]) for r in out["result"]}
        return got if got.get(("v1", "2"), 0) > 0 and got.get(("v2", "2"), 0) > 0 else None
    # The visitors go on until the gateway's rate per version shows (two scrapes of the
    # counters at least): 300 answers alone take about a second.
    with Visitors(cluster.gateway_port, new=4, pinned=0, returning=("v2",), seconds=120) as users:
        users.canary_share(300)
        try:
            answered = wait(gateway_answers, 60, "the gateway's 2xx answers per version in the rules")
        except AssertionError as e:
            kept = api(cluster, "query", query='envoy_cluster_upstream_rq_xx[5m]')["result"]
            raise AssertionError(f"{e}; the gateway's kept counts: "
                                 f"{[(x['metric'].get('envoy_cluster_name'), x['values']) for x in kept]}") from None
        print("the gateway's answers/s by version and class:", {k: round(v, 3) for k, v in answered.items()})
    by_version: dict[str, int] = {}
    for r in users.records:
        by_version[f"{r[4]} {r[3]}"] = by_version.get(f"{r[4]} {r[3]}", 0) + 1
    print("the visitors' answers (version status):", by_version)

    def scraped():  # the visitors' classifications (not the probes' and scrapes' requests)
        out = api(cluster, "query",
                  query='sum by (version) (increase(sms_messages_classified_total{namespace="sms-app"}[10m]))')
        return {r["metric"].get("version"): float(r["value"][1]) for r in out["result"]} or None

    last_seen: list = [None]

    def both():
        last_seen[0] = scraped()
        v = last_seen[0]
        return v if v and v.get("v1", 0) > 0 and v.get("v2", 0) > 0 else None

    try:
        seen = wait(both, 90, "the visitors' classifications by both versions in Prometheus")
    except AssertionError as e:
        raise AssertionError(f"{e}; last increase by version: {last_seen[0]}") from None
    print("classifications in the last 10 minutes by version, in the cluster's Prometheus:", seen)
    out = subprocess.run([str(ROOT / "target" / "debug" / "sms-experiment"), "--prometheus",
                          f"http://127.0.0.1:{cluster.prometheus_port}", "--window", "10m", "--min-samples", "10",
                          "--min-duration", "0", "--namespace", "sms-app", "--json"],
                         capture_output=True, text=True, timeout=60)
    print(out.stdout[:2000], out.stderr[-2000:])
    assert out.returncode in (0, 1, 2), out.stderr  # a verdict, not an error (3)
    report = json.loads(out.stdout)
    (canary,) = [e for e in report["experiments"] if e["name"] == "canary"]
    counts = {r["figure"]: r for r in canary["rows"]}
    print("verdict:", canary["reason"])
    assert counts["classifications"]["has_data"] and counts["classifications"]["candidate"]["estimate"] > 0, counts

