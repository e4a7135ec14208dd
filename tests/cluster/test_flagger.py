"""Flagger for real: the Flagger controller (its own chart, its module's build) drives the
chart's Canary on this cluster with Istio and the Operator-made Prometheus, and the
experiment's verdict is its gate (`sms-experiment serve`, flagger.gate.url): a canary
that misses the experiment's rule is rolled back by the gate's rollback hook, a good one
is promoted only once the gate confirms PROMOTE. The users are `make mesh-traffic`
(labelled test-split messages with guesses) through the ingress gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import start_cluster, stop, wait

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def flagged():
    c = start_cluster("flagger", "--set", "flagger.enabled=true", "--set", "flagger.analysis.interval=30s")
    traffic = subprocess.Popen(
        ["bash", "scripts/mesh-traffic.sh", "--gateway", f"http://127.0.0.1:{c.gateway_port}", "--host",
         "sms.localhost", "--duration", "900", "--count", "0", "--concurrency", "8"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    yield c
    if traffic.poll() is None:
        os.killpg(traffic.pid, signal.SIGTERM)
        traffic.wait(30)
    stop(c)


def canary(c) -> dict:
    return c.json("get", "canary", "-n", "sms-app", "sms-app-app")["status"]


def events(c) -> list[str]:
    items = c.json("get", "events", "-n", "sms-app", "--field-selector", "involvedObject.kind=Canary")["items"]
    items.sort(key=lambda e: e.get("lastTimestamp") or "")
    return [e["message"] for e in items]


def gate_lines(c) -> list[str]:
    return (c.state / "logs" / "sms-experiment-gate.log").read_text().splitlines()


def gate_answers(c, since: int) -> list[tuple[str, int, str]]:
    """The gate's answers logged after line `since`: (hook, status, verdict)."""
    out = []
    for line in gate_lines(c)[since:]:
        if line.startswith("{"):
            e = json.loads(line)
            if e.get("msg") == "webhook" and "status" in e:
                out.append((e["hook"], e["status"], e.get("verdict")))
    return out


def run_of(c, before: str, seconds: float) -> tuple[str, float]:
    """Waits for Flagger's run of a new revision (a lastAppliedSpec other than `before`)
    to end; its phase and how long it took."""
    t0 = time.monotonic()
    status = {}
    while time.monotonic() - t0 < seconds:
        status = canary(c)
        if status.get("lastAppliedSpec") != before and status.get("phase") in ("Failed", "Succeeded"):
            return status["phase"], time.monotonic() - t0
        time.sleep(3)
    raise AssertionError(f"no end of the run in {seconds:.0f} s ({status.get('phase')}):\n{events(c)[-15:]}")


def upgrade(c, *sets: str) -> None:
    out = c.helm("upgrade", "sms-app", "helm/", "-n", "sms-app", "--reuse-values", *sets)
    assert out.returncode == 0, out.stderr


def test_flagger_rolls_back_on_the_gates_verdict_and_promotes_only_on_promote(flagged):
    c = flagged
    # Flagger made the primary and parked the target
    wait(lambda: canary(c).get("phase") == "Initialized", 120, "Flagger to initialise the Canary")
    primary = c.json("get", "deployment", "-n", "sms-app", "sms-app-app-primary")
    assert primary["status"].get("readyReplicas", 0) >= 1, primary["status"]

    # A canary without the experiment's feature (v2 with the cache off): its model calls
    # per classification miss the rule, the gate says ROLL BACK, Flagger rolls back.
    spec, since = canary(c)["lastAppliedSpec"], len(gate_lines(c))
    upgrade(c, "--set", "appService.version=v2", "--set", "appService.canary.version=v3")
    phase, took = run_of(c, spec, 300)
    answers = gate_answers(c, since)
    print(f"v2 without the cache: {phase} after {took:.0f} s; the gate: {answers[-4:]}")
    assert phase == "Failed"
    assert ("rollback", 200, "ROLL BACK") in answers, answers
    assert any("Rollback check sms-experiment-rollback passed" in m for m in events(c)), events(c)
    assert not any(h == "confirm-promotion" and st == 200 for h, st, _ in answers), answers

    # The same version with its feature on: a new revision, judged on its own run (not the
    # failed one's data); promoted once the gate confirms PROMOTE.
    spec, since = canary(c)["lastAppliedSpec"], len(gate_lines(c))
    upgrade(c, "--set", "appService.cache.enabled=true")
    phase, took = run_of(c, spec, 600)
    answers = gate_answers(c, since)
    print(f"v2 with the cache: {phase} after {took:.0f} s; the gate: {answers[-4:]}")
    assert phase == "Succeeded", events(c)[-15:]
    assert ("confirm-promotion", 200, "PROMOTE") in answers, answers
    assert not any(v == "ROLL BACK" for _, _, v in answers), answers
    env = {e["name"]: e.get("value") for e in c.json("get", "deployment", "-n", "sms-app", "sms-app-app-primary")
           ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["APP_VERSION"], env["CACHE_ENABLED"]) == ("v2", "true"), env
