"""A dead canary on real Envoys: `make mesh` (scripts/mesh.sh, debug builds, free
ports, the chart's defaults: canary 90/10, the sticky cookie) under a steady, bounded load
through the gateway, visitors pinned to v2 by the cookie and new visitors without one; then
`kill -9` of the canary app by the PID the supervisor recorded (processes.json; it restarts
nothing but istio-xds and logs the exit).

The dead canary counts nothing itself: every 503 its visitors get comes from the gateway's
Envoy. The mesh's Prometheus scrapes that Envoy as the chart's PodMonitor `<release>-gateway`
would (envoy_cluster_upstream_rq_xx of the app's subset clusters, docs/mesh.md), so:

- a new visitor the split sends to v2 gets Envoy's 503 with the Set-Cookie that pins it to
  v2 for an hour (docs/experiment.md);
- the rules' user error share shows v2 failing while the app's own share shows nothing;
- `CanaryUnreachable` (for: 1m) fires in the mesh's Prometheus;
- `sms-experiment --experiment canary` (what `make experiment` runs) reads ROLL BACK on the
  error share.

Figures (failed requests after the kill, time until the alert fired, the verdict's numbers)
go to test-output/mesh/figures.txt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import requests

from harness import COOKIE, OUT, ROOT, Load, poll, report, script_env, start_mesh

EXPERIMENT = ROOT / "target" / "debug" / "sms-experiment"
NAMESPACE, CANARY = "sms-app", "sms-app-app-canary"
GATEWAY_JOB = "sms-app/sms-app-gateway"  # the PodMonitor's job: <namespace>/<name>
V2_CLUSTER = r"outbound\\|8080\\|v2\\|sms-app-app\\.sms-app\\.svc\\.cluster\\.local"


def query(prom: str, expr: str) -> list[dict]:
    body = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def value(prom: str, expr: str) -> float | None:
    r = query(prom, expr)
    return float(r[0]["value"][1]) if r else None


def alert(prom: str, name: str) -> dict | None:
    alerts = requests.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return next((a for a in alerts if a["labels"].get("alertname") == name
                 and a["labels"].get("version") == "v2" and a["labels"].get("namespace") == NAMESPACE), None)


def new_visitor_sent_to_v2(gw: str, env: dict, tries: int = 300) -> requests.Response:
    """The first answer, to a visitor without a cookie, that pins it to v2."""
    for i in range(tries):
        r = requests.post(f"{gw}/sms/", json={"sms": f"new visitor {i}"}, timeout=10,
                          headers={"Host": f"sms.localhost:{env['MESH_PORT']}"})
        if f"{COOKIE}=v2" in r.headers.get("set-cookie", ""):
            return r
    raise AssertionError(f"none of {tries} new visitors was sent to v2")


def test_a_dead_canary_is_seen_by_the_gateway_the_alert_and_the_verdict():
    assert EXPERIMENT.is_file(), f"{EXPERIMENT} missing: tests/mesh/run.sh builds it (cargo build -p sms-experiment)"
    run_dir = OUT / "mesh-dead-canary"
    env = script_env(run_dir)
    gw, prom = f"http://127.0.0.1:{env['MESH_PORT']}", f"http://127.0.0.1:{env['MESH_PROMETHEUS_PORT']}"
    out = OUT / "mesh-dead-canary.out"
    proc, loads = None, []
    try:
        proc = start_mesh(env, out)
        # rules are evaluated as often as the targets are scraped (MESH_SCRAPE_INTERVAL)
        glob = json.loads((run_dir / "prometheus" / "prometheus.yml").read_text())["global"]
        assert glob["evaluation_interval"] == glob["scrape_interval"] == env["MESH_SCRAPE_INTERVAL"], glob
        poll(lambda: value(prom, f'up{{job="{GATEWAY_JOB}", namespace="istio-system"}}') == 1, 30,
             "the mesh's Prometheus scraping the gateway's Envoy")

        pinned = Load(gw, env, seconds=150, limit=20_000, headers={"Cookie": f"{COOKIE}=v2"})
        fresh = Load(gw, env, seconds=150, limit=20_000, rate=50)
        loads = [pinned, fresh]
        # v2 answers, and the gateway's counts for its subset cluster reach Prometheus
        poll(lambda: (value(prom, f'sum(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"{V2_CLUSTER}", '
                                  'envoy_response_code_class="2"})') or 0) > 0, 20,
             "the gateway's 2xx count for v2 in Prometheus")
        assert not pinned.failures and not fresh.failures, (pinned.failures[:3], fresh.failures[:3])
        # only the series the rules read are kept: the app's subset clusters, a few per version
        kept = query(prom, f'{{job="{GATEWAY_JOB}", __name__!~"up|scrape_.+"}}')
        assert {s["metric"]["__name__"] for s in kept} == {"envoy_cluster_upstream_rq_xx"}, kept
        assert all(s["metric"]["envoy_cluster_name"].split("|")[3] == "sms-app-app.sms-app.svc.cluster.local"
                   and s["metric"]["envoy_cluster_name"].split("|")[2] in ("v1", "v2") for s in kept), kept

        canary = next(c["pid"] for c in json.loads((run_dir / "processes.json").read_text())["children"]
                      if c["name"] == CANARY)
        before = (pinned.total, fresh.total)
        os.kill(canary, signal.SIGKILL)
        killed = time.monotonic()
        poll(lambda: f"{CANARY} (app-service, pid {canary}) exited with signal 9" in out.read_text(errors="replace"),
             10, "the supervisor to name the canary's exit")

        # a new visitor the split sends to v2: Envoy's 503, with the cookie pinning it there for an hour
        r = new_visitor_sent_to_v2(gw, env)
        cookie = r.headers["set-cookie"]
        report(f"dead canary: a new visitor sent to v2 got {r.status_code} {r.text[:80]!r} with "
               f"Set-Cookie: {cookie}")
        assert r.status_code == 503 and "x-envoy-upstream-service-time" not in r.headers, (r.status_code, r.headers)
        assert "Max-Age=3600" in cookie, cookie

        # the user error share shows it (the gateway's view); the app's own shows nothing
        poll(lambda: (value(prom, f'namespace_version:sms_user_error_share:ratio_rate5m'
                                  f'{{namespace="{NAMESPACE}", version="v2"}}') or 0) > 0.5, 60,
             "v2's user error share above 50 %")
        app_view = value(prom, f'namespace_version:sms_request_error_share:ratio_rate5m'
                               f'{{namespace="{NAMESPACE}", version="v2"}}')
        user_view = value(prom, f'namespace_version:sms_user_error_share:ratio_rate5m'
                                f'{{namespace="{NAMESPACE}", version="v2"}}')
        assert not app_view, app_view  # 0: the dead app answered no 5xx

        # CanaryUnreachable: pending, then firing after its `for: 1m`
        pending = firing = None
        deadline = killed + 150
        while time.monotonic() < deadline:
            a = alert(prom, "CanaryUnreachable")
            if a and pending is None:
                pending = time.monotonic() - killed
            if a and a["state"] == "firing":
                firing = time.monotonic() - killed
                break
            time.sleep(0.5)
        assert firing is not None, f"CanaryUnreachable not firing {deadline - killed:.0f} s after the kill " \
                                   f"(pending after {pending} s): {alert(prom, 'CanaryUnreachable')}"
        a = alert(prom, "CanaryUnreachable")
        for load in loads:
            load.stop()
        after = (pinned.total - before[0], fresh.total - before[1])
        failed = (len(pinned.failures), len(fresh.failures))
        report(f"dead canary (kill -9 of app v2 under load, canary 90/10): visitors pinned to v2 {failed[0]} of "
               f"{after[0]} requests failed after the kill; new visitors {failed[1]} of {after[1]} (those the split "
               f"sent to v2); v2's 5xx share: the app's own {app_view or 0:.2f}, the users' (gateway) {user_view:.2f}; "
               f"CanaryUnreachable pending {pending:.1f} s and firing {firing:.1f} s after the kill "
               f"(value {float(a['value']):.2f})")
        # every request of a visitor pinned to the dead v2 fails (one may have been answered as it died)
        assert after[0] > 0 and after[0] - failed[0] <= 1, (failed, after)
        assert 0 < failed[1] < after[1], "new visitors sent to v2 fail, those sent to v1 do not"
        assert all(" 503 no upstream time " in f for f in pinned.failures + fresh.failures), \
            (pinned.failures[:3], fresh.failures[:3])

        # the verdict, as `make experiment` reads it from this Prometheus
        args = ["--prometheus", prom, "--namespace", NAMESPACE, "--window", "3m", "--min-duration", "0",
                "--experiment", "canary"]
        v = subprocess.run([str(EXPERIMENT), *args, "--json"], capture_output=True, text=True, timeout=60)
        doc = json.loads(v.stdout)
        canary_doc = next(e for e in doc["experiments"] if e["name"] == "canary")
        errors = next(row for row in canary_doc["rows"] if row["figure"] == "error share (5xx)")
        pct = lambda iv: f"{100 * iv['estimate']:.2f} % [{100 * iv['low']:.2f}, {100 * iv['high']:.2f}]"  # noqa: E731
        report(f"dead canary: sms-experiment {' '.join(args[2:])}: exit {v.returncode}, {canary_doc['verdict']} "
               f"({canary_doc['reason']}); error share (5xx) v1 {pct(errors['baseline'])}, v2 "
               f"{pct(errors['candidate'])}, {errors['status']}")
        assert v.returncode == 2 and canary_doc["verdict"] == "ROLL_BACK" and errors["status"] == "fail", v.stdout
        assert errors["candidate"]["estimate"] > 0.5, errors
    finally:
        for load in loads:
            load.stop()
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, out.read_text(errors="replace")[-2000:]
