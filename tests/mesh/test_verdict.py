"""The experiment judged end to end on one machine: labelled
messages from the data set's test split go through the real gateway as visitors with their
cookies and guesses (the traffic generator of `make mesh-traffic`), the Prometheus that
`make mesh` runs scrapes every process as the chart's ServiceMonitors would, with the
chart's rules, and `sms-experiment` (what `make experiment` runs, built by run.sh) reads it
with the production minimum of 1,000 samples but a short window and no minimum duration.

On a mesh of its own (fresh counters), in this order:

1. low traffic gives KEEP RUNNING (and says how much more is needed);
2. a good canary (cache on) and shadow (model v2) reach PROMOTE: canary 50/50 and the
   mirror at 100 %, so enough v2 evidence accrues in seconds;
3. the shadow's disagreement with the serving model, as sms-experiment reports it from
   Prometheus, equals (within 1 point) the same figure computed from the two model
   services' own logs joined on trace id (model v1 logs the label it served, the shadow
   the label it gave; the trace id travels from the app through the mirror);
4. a bad canary (app v2 whose model deadline, 1 ms, is too short for any model call)
   reaches ROLL BACK.

Each scenario writes its figures to test-output/mesh/figures.txt."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from harness import DEPLOYMENTS, HOST, OUT, ROOT, Stack, poll, report
from smsdev.mesh import traffic  # the generator of `make mesh-traffic`
from smsdev.promtext import samples

EXPERIMENT = ROOT / "target" / "debug" / "sms-experiment"
NAMESPACE = "sms-app"
SETS = ("istio.canary.weights.stable=50,istio.canary.weights.canary=50", "modelService.shadow.mirror.percent=100")
VERDICT_ARGS = ["--namespace", NAMESPACE, "--window", "15m", "--min-samples", "1000", "--min-duration", "0"]


@pytest.fixture(scope="module")
def exp():
    """A mesh of its own with Prometheus; JSON logs at info level, the model's line per call
    (a debug line) included."""
    assert EXPERIMENT.is_file(), f"{EXPERIMENT} missing: tests/mesh/run.sh builds it (cargo build -p sms-experiment)"
    split = Path(os.environ.get("MESH_TEST_SPLIT", ROOT / ".cache" / "data" / "test-split.jsonl"))
    assert split.is_file(), f"{split} missing: tests/mesh/run.sh writes it (scripts/ensure-test-split.sh)"
    s = Stack(OUT / "verdict", prometheus=True, extra_env={"RUST_LOG": "info,model_service=debug", "LOG_FORMAT": "json"})
    try:
        s.use(*SETS)
        poll(s.scraped, 60, "Prometheus scraping every process of the mesh")
        s.messages = traffic.load_messages(split)
        yield s
    finally:
        s.stop()


def send(exp, count: int, concurrency: int = 8, seed: int = 1, rate: float = 0, per_visitor: int = 10):
    out = traffic.run(exp.gateway, HOST, exp.messages, duration=120, count=count, concurrency=concurrency,
                      rate=rate, per_visitor=per_visitor, seed=seed)
    report(out.text())
    return out


QUERIES = {  # what is compared between the pages and Prometheus, per pod, to know it is up to date
    "sms_requests_total": "sms_requests_total",
    "sms_model_requests_total": "sms_model_requests_total",
    "sms_shadow_comparisons_total": "sms_shadow_comparisons_total",
}


def pages(exp) -> dict:
    out = {}
    for w in exp.mesh.workloads.values():
        text = requests.get(w.metrics_url, timeout=5).text
        for name in QUERIES:
            n = sum(v for m, lb, v in samples(text) if m == name)
            if n:
                out[(name, f"{w.name}-{w.proc.pid}")] = n
    return out


def settle(exp) -> dict:
    """Waits until Prometheus holds every process's final counters (the traffic has stopped),
    so that the verdict sees all of it; returns the pages' counters."""
    want = pages(exp)

    def caught_up():
        have = {}
        for name, q in QUERIES.items():
            for r in exp.query(f"sum by (pod) ({q})"):
                if float(r["value"][1]):
                    have[(name, r["metric"]["pod"])] = float(r["value"][1])
        return all(have.get(k) == v for k, v in want.items())
    poll(caught_up, 30, "Prometheus to scrape the final counters")
    return want


def verdict(exp, *extra: str) -> tuple[int, dict]:
    cmd = [str(EXPERIMENT), "--prometheus", exp.prometheus, *VERDICT_ARGS, *extra]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1, 2), f"sms-experiment failed ({r.returncode}): {r.stderr}"
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == r.returncode
    with open(exp.run / "verdicts.txt", "a") as f:  # the text report, as an operator reads it
        f.write(subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout)
    report(f"  sms-experiment {' '.join(VERDICT_ARGS + list(extra))}: exit {r.returncode}")
    for e in doc["experiments"]:
        more = f"; needs about {e['more_needed']:,.0f} more" if e["more_needed"] else ""
        report(f"    {e['name']}: {e['verdict']} ({e['reason']}; {e['traffic']:,.0f} {e['traffic_unit']}{more})")
        for row in e["rows"]:
            report(f"      {row['figure']:<46} {fmt(row['baseline'], row['unit']):>22} {fmt(row['candidate'], row['unit']):>22}"
                   f"  diff {fmt(row['difference'], row['unit'], diff=True):>22}  {row['status']}")
    return r.returncode, doc


def fmt(iv: dict | None, unit: str, diff: bool = False) -> str:
    if iv is None:
        return "-"
    if unit == "count":
        return f"{iv['estimate']:,.0f}"
    if unit == "number":
        return f"{iv['estimate']:.3f}"
    scale, suffix = (1000, " ms") if unit == "seconds" else (100, " pp" if diff else " %")
    b = lambda x: "inf" if x is None else f"{x * scale:.1f}"  # noqa: E731
    return f"{iv['estimate'] * scale:.2f}{suffix} [{b(iv['low'])}, {b(iv['high'])}]"


def by_name(doc: dict) -> dict:
    return {e["name"]: e for e in doc["experiments"]}


def test_1_low_traffic_keeps_running(exp):
    assert not exp.query("sum(sms_messages_classified_total) > 0"), "this mesh has seen traffic already"
    report("verdict, low traffic (40 requests in 4 s from 20 visitors, canary 50/50, mirror 100 %):")
    sent = send(exp, 40, concurrency=2, rate=10, per_visitor=2)
    assert sent.status == {200: 40}, sent.status
    settle(exp)
    code, doc = verdict(exp)
    e = by_name(doc)
    assert code == 1 and {n: x["verdict"] for n, x in e.items()} == {"canary": "KEEP_RUNNING", "shadow": "KEEP_RUNNING"}
    for x in e.values():
        assert 0 < x["traffic"] < 1000 and x["more_needed"] and x["more_needed"] > 0, x
        assert not [r["figure"] for r in x["rows"] if r["status"] == "fail"]


@pytest.fixture(scope="module")
def good(exp):
    """Enough labelled traffic for a verdict on a good canary and a good shadow, paced at
    about half of what the debug-built mesh serves on two cores: saturated, the p95
    inference time measures the scheduler, not the model (docs/experiment.md)."""
    report("verdict, good canary and shadow (5,000 requests at 100/s, canary 50/50, mirror 100 %):")
    sent = send(exp, 5000, rate=100)
    return sent, settle(exp)


def test_2_good_canary_and_shadow_promote(exp, good):
    sent, _ = good
    assert sent.status == {200: 5000} and sent.flipped_visitors == 0, sent.text()
    assert min(sent.by_version["v1"], sent.by_version["v2"]) > 2000, sent.by_version
    code, doc = verdict(exp)
    e = by_name(doc)
    assert {n: x["verdict"] for n, x in e.items()} == {"canary": "PROMOTE", "shadow": "PROMOTE"}, doc
    assert code == 0
    for x in e.values():
        gating = [r for r in x["rows"] if r["status"] != "info"]
        assert gating and all(r["status"] == "pass" for r in gating), x["rows"]


def model_log(exp, key: str) -> dict:
    """trace id -> label of every call the model answered, from its JSON log."""
    out = {}
    for line in exp.proc(key).log().splitlines():
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

    served, shadow = model_log(exp, "model-v1"), model_log(exp, "model-v2")
    joined = served.keys() & shadow.keys()
    differ = sum(served[t] != shadow[t] for t in joined)
    from_logs = differ / len(joined)
    page = requests.get(exp.mesh.workloads[DEPLOYMENTS["model-v2"]].metrics_url, timeout=5).text
    counted = {o: sum(v for m, lb, v in samples(page) if m == "sms_shadow_comparisons_total" and lb["outcome"] == o)
               for o in ("agree", "disagree")}
    report(f"shadow disagreement with the serving model: sms-experiment (Prometheus) {100 * from_prometheus:.2f} %; "
           f"the two model services' logs joined on trace id {differ} of {len(joined):,} = {100 * from_logs:.2f} % "
           f"(model v1 logged {len(served):,} calls, the shadow {len(shadow):,}); the shadow's own counters "
           f"{counted['disagree']:.0f} of {sum(counted.values()):,.0f}")
    # the mirror copies every call (100 %), and each copy carries the caller's trace id
    assert len(joined) >= 0.99 * len(served) and len(joined) == len(shadow), (len(joined), len(served), len(shadow))
    assert differ > 0, "v1 and v2 disagree on some test messages: the join must find them"
    assert abs(from_prometheus - from_logs) <= 0.01
    # the shadow compared exactly the calls in the logs, and found the same disagreements
    assert (counted["disagree"], sum(counted.values())) == (differ, len(joined)), counted


def test_4_bad_canary_rolls_back(exp):
    """App v2 replaced by a broken build: its model deadline (1 ms) is too short for a model
    call to answer, so it answers 503 where v1 answers 200. The chart has one model deadline
    for both versions (appService.modelTimeoutMs), so the broken v2 is started here, as a bad
    image would be; the local mesh routes to it ready or not (docs/mesh.md)."""
    name = DEPLOYMENTS["app-v2"]
    w = exp.mesh.workloads[name]
    w.env["MODEL_TIMEOUT_MS"] = "1"
    w.ready_url = w.ready_url.replace("/readyz", "/livez")
    exp.mesh.restart(name)
    poll(exp.scraped, 30, "Prometheus scraping the new v2 process")
    report("verdict, bad canary (app v2 with a 1 ms model deadline; 800 requests, canary 50/50):")
    sent = send(exp, 800, seed=2)
    assert sent.not_ok["v2"] > 0.5 * sent.by_version["v2"] and sent.not_ok["v1"] == 0, sent.text()
    settle(exp)
    code, doc = verdict(exp, "--experiment", "canary")
    canary = by_name(doc)["canary"]
    errors = next(r for r in canary["rows"] if r["figure"] == "error share (5xx)")
    assert code == 2 and canary["verdict"] == "ROLL_BACK" and errors["status"] == "fail", canary
