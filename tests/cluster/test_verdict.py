"""The experiment judged end to end on a cluster of its own (fresh counters): labelled
messages from the data set's test split go through the ingress gateway as visitors with
their cookies and guesses (`make mesh-traffic`), the cluster's Prometheus scrapes every pod
as the chart's ServiceMonitors say, with the chart's rules, and `sms-experiment` (what
`make experiment` runs) reads it with the production minimum of 1,000 samples but a short
window and no minimum duration. Canary 50/50 and the mirror at 100 %, so that enough v2
evidence accrues in seconds. In order:

1. low traffic gives KEEP RUNNING (and says how much more is needed);
2. a good canary (cache on) and shadow (model v2) reach PROMOTE;
3. the shadow's disagreement with the serving model, as sms-experiment reports it from
   Prometheus, equals (within 1 point) the same figure computed from the model pods' own
   logs (`kubectl logs`) joined on trace id: the trace id travels from the app through the
   sidecar's mirror;
4. a bad canary reaches ROLL BACK: app v2 replaced by a broken build whose model deadline
   (1 ms) is too short for any model call and whose readiness only says it is alive
   (`kubectl set env` and `kubectl patch` of the canary's Deployment; the chart has one
   model deadline for both versions, and a readiness that checks the model would keep
   such a build from ever getting traffic)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import ROOT, api, exec_in, pods, ready, start_cluster, stop, wait

EXPERIMENT = ROOT / "target" / "debug" / "sms-experiment"
VERDICT_ARGS = ["--namespace", "sms-app", "--window", "15m", "--min-samples", "1000", "--min-duration", "0"]
COUNTERS = ("sms_requests_total", "sms_model_requests_total", "sms_shadow_comparisons_total")
PAGES = {"app": ("app", 8080), "model": ("model", 9464)}  # component: (container, port of /metrics)


@pytest.fixture(scope="module")
def exp():
    assert EXPERIMENT.is_file(), f"{EXPERIMENT} missing (tests/cluster/run.sh builds it)"
    c = start_cluster("verdict", "--set", "istio.canary.weights.stable=50,istio.canary.weights.canary=50",
                      "--set", "modelService.shadow.mirror.percent=100",
                      # the model's line per answer (trace id, label) is a debug line
                      "--set", "modelService.logLevel=info\\,model_service=debug")
    yield c
    stop(c)


def send(c, count: int, concurrency: int = 8, seed: int = 1, rate: float = 0, per_visitor: int = 10) -> dict:
    out = subprocess.run(["bash", "scripts/mesh-traffic.sh", "--gateway", f"http://127.0.0.1:{c.gateway_port}",
                          "--host", "sms.localhost", "--count", str(count), "--duration", "300",
                          "--concurrency", str(concurrency), "--rate", str(rate), "--per-visitor", str(per_visitor),
                          "--seed", str(seed), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=360)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    print(f"  {summary['requests']} requests in {summary['seconds']} s: {summary['by_version']}, "
          f"not ok {summary['not_ok']}, status {summary['status']}")
    return summary


def pages(c) -> dict:
    """Each pod's counters, from its own /metrics (read from inside the pod)."""
    out = {}
    for p in pods(c):
        component = p["metadata"]["labels"].get("app.kubernetes.io/component")
        if component not in PAGES or not ready(p) or "deletionTimestamp" in p["metadata"]:
            continue
        container, port = PAGES[component]
        got = exec_in(c, p, container, "curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/metrics")
        assert got.returncode == 0, got.stderr
        for name in COUNTERS:
            n = sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} (\S+)$", got.stdout, re.M))
            if n:
                out[(name, p["metadata"]["name"])] = n
    return out


def settle(c) -> dict:
    """Until Prometheus holds every pod's final counters (the traffic has stopped), so that
    the verdict sees all of it; returns the pages' counters."""
    want = pages(c)

    def caught_up():
        have = {}
        for name in COUNTERS:
            for r in api(c, "query", query=f"sum by (pod) ({name})")["result"]:
                if float(r["value"][1]):
                    have[(name, r["metric"]["pod"])] = float(r["value"][1])
        return all(have.get(k) == v for k, v in want.items())
    wait(caught_up, 60, "Prometheus to scrape the final counters")
    return want


def verdict(c, *extra: str) -> tuple[int, dict]:
    cmd = [str(EXPERIMENT), "--prometheus", f"http://127.0.0.1:{c.prometheus_port}", *VERDICT_ARGS, *extra]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1, 2), f"sms-experiment failed ({r.returncode}): {r.stderr}"
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == r.returncode
    for e in doc["experiments"]:
        print(f"    {e['name']}: {e['verdict']} ({e['reason']}; {e['traffic']:,.0f} {e['traffic_unit']})")
    return r.returncode, doc


def by_name(doc: dict) -> dict:
    return {e["name"]: e for e in doc["experiments"]}


def test_1_low_traffic_keeps_running(exp):
    assert not api(exp, "query", query="sum(sms_messages_classified_total) > 0")["result"], "seen traffic already"
    print("verdict, low traffic (40 requests from 20 visitors):")
    # A histogram's series appears with its first call (counters are exported at 0 from the
    # start), and what it holds at its first scrape is no increase to rate(): a few calls
    # first, until the histograms the verdict reads are scraped for both versions (the
    # apps' latency, the models' inference time, the shadow's gap), then the rest.
    def versions(metric: str) -> set:
        return {r["metric"].get("version") for r in api(exp, "query", query=metric)["result"]}

    def warmed(seed=iter(range(100, 200))):
        if (versions("sms_request_latency_seconds_count{route=\"/sms/\"}")
                == versions("sms_model_inference_seconds_count") == {"v1", "v2"}
                and api(exp, "query", query="sms_shadow_probability_gap_count")["result"]):
            return True
        send(exp, 2, concurrency=1, per_visitor=1, seed=next(seed))
        time.sleep(16)  # a scrape
        return False
    wait(warmed, 240, "both apps' and both models' counters in Prometheus")
    sent = send(exp, 38, concurrency=2, rate=10, per_visitor=2, seed=5)
    assert sent["status"] == {"200": 38}, sent
    settle(exp)

    def judged():  # a rate needs two scrapes (every 15 s here) of the counters after the calls
        code, doc = verdict(exp)
        e = by_name(doc)
        return (code, e) if all(x["traffic"] > 0 and x["more_needed"] for x in e.values()) else None
    code, e = wait(judged, 90, "both experiments' first evidence in the verdict")
    assert code == 1 and {n: x["verdict"] for n, x in e.items()} == {"canary": "KEEP_RUNNING", "shadow": "KEEP_RUNNING"}
    for x in e.values():
        assert 0 < x["traffic"] < 1000 and x["more_needed"] and x["more_needed"] > 0, x
        assert not [r["figure"] for r in x["rows"] if r["status"] == "fail"]


@pytest.fixture(scope="module")
def good(exp):
    """Enough labelled traffic for a verdict on a good canary and shadow, paced below what
    the debug builds serve here: saturated, the p95 inference time measures the scheduler,
    not the model (docs/experiment.md)."""
    print("verdict, good canary and shadow (5,000 requests at 100/s):")
    sent = send(exp, 5000, rate=100)
    return sent, settle(exp)


def test_2_good_canary_and_shadow_promote(exp, good):
    sent, _ = good
    assert sent["status"] == {"200": 5000} and sent["flipped_visitors"] == 0, sent
    assert min(sent["by_version"]["v1"], sent["by_version"]["v2"]) > 2000, sent["by_version"]
    code, doc = verdict(exp)
    e = by_name(doc)
    assert {n: x["verdict"] for n, x in e.items()} == {"canary": "PROMOTE", "shadow": "PROMOTE"}, doc
    assert code == 0
    for x in e.values():
        gating = [r for r in x["rows"] if r["status"] != "info"]
        assert gating and all(r["status"] == "pass" for r in gating), x["rows"]


def model_log(c, version: str) -> dict:
    """trace id -> label of every call the model pods of `version` answered, from their
    JSON logs (`kubectl logs`)."""
    out = {}
    for p in pods(c, **{"app.kubernetes.io/component": "model", "version": version}):
        log = c.kubectl("logs", "-n", "sms-app", p["metadata"]["name"], "-c", "model", timeout=60).stdout
        for line in log.splitlines():
            if line.startswith("{"):
                ev = json.loads(line)
                if ev.get("message") == "classified":
                    out[ev["trace_id"]] = ev["label"]
    return out


def test_3_shadow_disagreement_matches_the_services_logs(exp, good):
    _, counters = good
    code, doc = verdict(exp, "--experiment", "shadow")
    row = next(r for r in by_name(doc)["shadow"]["rows"] if r["figure"] == "agreement with serving model")
    from_prometheus = 1 - row["candidate"]["estimate"]
    served, shadow = model_log(exp, "v1"), model_log(exp, "v2")
    joined = served.keys() & shadow.keys()
    differ = sum(served[t] != shadow[t] for t in joined)
    from_logs = differ / len(joined)
    print(f"shadow disagreement with the serving model: sms-experiment (Prometheus) {100 * from_prometheus:.2f} %; "
          f"the model pods' logs joined on trace id {differ} of {len(joined):,} = {100 * from_logs:.2f} % "
          f"(model v1 logged {len(served):,} calls, the shadow {len(shadow):,})")
    # the mirror copies every call (100 %), and each copy carries the caller's trace id
    assert len(joined) >= 0.99 * len(served) and len(joined) == len(shadow), (len(joined), len(served), len(shadow))
    assert differ > 0, "v1 and v2 disagree on some test messages: the join must find them"
    assert abs(from_prometheus - from_logs) <= 0.01


def test_4_bad_canary_rolls_back(exp):
    canary = "sms-app-app-canary"
    exp.kubectl("set", "env", f"deployment/{canary}", "-n", "sms-app", "-c", "app", "MODEL_TIMEOUT_MS=1")
    exp.kubectl("patch", "deployment", canary, "-n", "sms-app", "--type", "json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/template/spec/containers/0/readinessProbe/httpGet/path", "value": "/livez"}]))
    exp.kubectl("rollout", "status", f"deployment/{canary}", "-n", "sms-app", "--timeout", "180s", timeout=200)
    # Scraped before its first call: counters Prometheus first sees above 0 are not counted
    # as an increase.
    new = {p["metadata"]["name"] for p in pods(exp, **{"app.kubernetes.io/component": "app", "version": "v2"})
           if "deletionTimestamp" not in p["metadata"]}
    wait(lambda: new <= {r["metric"].get("pod") for r in
                         api(exp, "query", query='up{namespace="sms-app"} == 1')["result"]}, 90,
         "Prometheus scraping the new canary pod")
    print("verdict, bad canary (app v2 with a 1 ms model deadline; 800 requests):")
    sent = send(exp, 800, seed=2)
    assert sent["not_ok"].get("v2", 0) > 0.5 * sent["by_version"]["v2"] and not sent["not_ok"].get("v1"), sent
    settle(exp)

    def errors_seen():  # two scrapes after the calls
        code, doc = verdict(exp, "--experiment", "canary")
        c = by_name(doc)["canary"]
        errors = next(r for r in c["rows"] if r["figure"] == "error share (5xx)")
        return (code, c, errors) if errors["candidate"] and errors["candidate"]["estimate"] > 0 else None
    code, c, errors = wait(errors_seen, 90, "the canary's 5xx answers in the verdict")
    assert code == 2 and c["verdict"] == "ROLL_BACK" and errors["status"] == "fail", c
