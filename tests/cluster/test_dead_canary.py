"""A dead canary on the cluster: under a steady load through the ingress gateway (visitors
pinned to v2 by the cookie, and new visitors), the canary app's Deployment loses every pod
(`kubectl scale --replicas=0`: a node lost, an operator's slip; the autoscaler leaves a
Deployment at 0 alone). The dead canary counts nothing itself; what users get comes from
the gateway's Envoy, which the chart's PodMonitor has the cluster's Prometheus scrape, so:

- a new visitor the split sends to v2 gets the gateway's 503, with the Set-Cookie that pins
  it to v2 (docs/experiment.md);
- the rules' user error share shows v2 failing while the app's own share shows nothing;
- `CanaryUnreachable` (for: 1m) fires;
- `sms-experiment --experiment canary` (what `make experiment` runs) reads ROLL BACK.

The canary is given its pod back at the end."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import COOKIE, ROOT, Answer, Visitors, api, pods, post, ready, wait

EXPERIMENT = ROOT / "target" / "debug" / "sms-experiment"
CANARY = "sms-app-app-canary"


def value(cluster, expr: str) -> float | None:
    result = api(cluster, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else None


def alert(cluster, name: str) -> dict | None:
    return next((a for a in api(cluster, "alerts")["alerts"] if a["labels"].get("alertname") == name
                 and a["labels"].get("version") == "v2" and a["labels"].get("namespace") == "sms-app"), None)


def new_visitor_sent_to_v2(cluster, tries: int = 400) -> Answer:
    """The first answer, to a visitor without a cookie, that pins it to v2."""
    for i in range(tries):
        r = post(cluster.gateway_port, i)
        if r.set_cookie == f"{COOKIE}=v2":
            return r
    raise AssertionError(f"none of {tries} new visitors was sent to v2")


def test_a_dead_canary_is_seen_by_the_gateway_the_alert_and_the_verdict(cluster):
    assert EXPERIMENT.is_file(), f"{EXPERIMENT} missing (tests/cluster/run.sh builds it)"
    user_share = 'namespace_version:sms_user_error_share:ratio_rate5m{namespace="sms-app", version="v2"}'
    app_share = 'namespace_version:sms_request_error_share:ratio_rate5m{namespace="sms-app", version="v2"}'
    try:
        with Visitors(cluster.gateway_port, new=2, pinned=0, returning=("v2",) * 4, seconds=400) as v:
            v.canary_share(50)
            cluster.kubectl("scale", "deployment", CANARY, "-n", "sms-app", "--replicas=0")
            killed = time.monotonic()
            wait(lambda: not pods(cluster, **{"app.kubernetes.io/component": "app", "version": "v2"}), 120,
                 "the canary's pods to go")
            r = new_visitor_sent_to_v2(cluster)
            print(f"dead canary: a new visitor sent to v2 got {r.status} {r.body[:80]!r} with Set-Cookie: "
                  f"{r.set_cookie_header}")
            assert r.status == 503 and "Max-Age=" in r.set_cookie_header, (r.status, r.set_cookie_header)
            # the users' error share (the gateway's view) shows it; the app's own shows nothing
            wait(lambda: (value(cluster, user_share) or 0) > 0.5, 180, "v2's user error share above 50 %")
            assert not value(cluster, app_share), value(cluster, app_share)
            pending = firing = None
            deadline = killed + 300
            while time.monotonic() < deadline:
                a = alert(cluster, "CanaryUnreachable")
                if a and pending is None:
                    pending = time.monotonic() - killed
                if a and a["state"] == "firing":
                    firing = time.monotonic() - killed
                    break
                time.sleep(1)
            assert firing is not None, f"CanaryUnreachable not firing {deadline - killed:.0f} s after the canary " \
                                       f"lost its pods (pending after {pending} s)"
            args = ["--prometheus", f"http://127.0.0.1:{cluster.prometheus_port}", "--namespace", "sms-app",
                    "--window", "3m", "--min-duration", "0", "--experiment", "canary"]
            verdict = subprocess.run([str(EXPERIMENT), *args, "--json"], capture_output=True, text=True, timeout=60)
        doc = json.loads(verdict.stdout)
        canary = next(e for e in doc["experiments"] if e["name"] == "canary")
        errors = next(row for row in canary["rows"] if row["figure"] == "error share (5xx)")
        statuses = v.statuses()
        print(f"dead canary (kubectl scale {CANARY} --replicas=0 under load): visitors' answers {statuses}; "
              f"user error share of v2 {value(cluster, user_share):.2f}, the app's own {value(cluster, app_share)}; "
              f"CanaryUnreachable pending {pending:.0f} s and firing {firing:.0f} s after; sms-experiment: exit "
              f"{verdict.returncode}, {canary['verdict']} ({canary['reason']}), 5xx share of v2 "
              f"{100 * errors['candidate']['estimate']:.1f} %")
        assert set(statuses) == {200, 503}, statuses  # v1's visitors served, v2's refused by the gateway
        assert verdict.returncode == 2 and canary["verdict"] == "ROLL_BACK" and errors["status"] == "fail", \
            verdict.stdout
    finally:
        cluster.kubectl("scale", "deployment", CANARY, "-n", "sms-app", "--replicas=1", check=False)
        wait(lambda: [p for p in pods(cluster, **{"app.kubernetes.io/component": "app", "version": "v2"})
                      if ready(p)], 180, "the canary's pod back and Ready")
