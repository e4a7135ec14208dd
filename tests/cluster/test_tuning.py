"""The experiment tuned as its users tune it, on the cluster: each step a real `helm
upgrade --reuse-values` or `helm rollback` while visitors keep coming through the ingress
gateway, not one of their requests failing; after each step the routes do what the
values say (forced versions, the sticky cookie switched off and on, the mirror's share,
a rollback to 100/0 that keeps the canary's pods, so that going back routes users to pods
already Ready). The shadow also gets its share of Open Inference Protocol calls sent
through a sidecar."""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter

from conftest import (COOKIE, GRPCURL, HOST, Answer, Visitors, answers, deployed_revision, exec_in,
                      model_calls_by_version, pods, ready, wait)

def versions(rs: list[Answer]) -> Counter:
    return Counter(r.version if r.status == 200 else r.status for r in rs)


def upgrade(cluster, *sets: str) -> int:
    """`helm upgrade --reuse-values --set ...`; the new revision."""
    out = cluster.helm("upgrade", "sms-app", "helm/", "-n", "sms-app", "--reuse-values", "--set", ",".join(sets))
    assert out.returncode == 0, out.stderr
    return deployed_revision(cluster)


def rollback(cluster, to: int) -> None:
    out = cluster.helm("rollback", "sms-app", str(to), "-n", "sms-app")
    assert out.returncode == 0, out.stderr


def test_forced_versions_and_a_rollback_to_100_0_and_back_under_load_with_no_failed_request(cluster):
    cases = {
        "x-version: v2 beats a v1 cookie": ("v2", dict(headers={"x-version": "v2", "Cookie": f"{COOKIE}=v1"})),
        "canary. host beats a v1 cookie": ("v2", dict(host=f"canary.{HOST}", headers={"Cookie": f"{COOKIE}=v1"})),
        "x-version: v1 beats a v2 cookie": ("v1", dict(headers={"x-version": "v1", "Cookie": f"{COOKIE}=v2"})),
        "stable. host beats a v2 cookie": ("v1", dict(host=f"stable.{HOST}", headers={"Cookie": f"{COOKIE}=v2"})),
    }
    for what, (want, kw) in cases.items():
        seen = versions(answers(cluster, 50, **kw))
        assert seen == {want: 50}, f"{what}: {seen}"
    first = deployed_revision(cluster)
    canary_pods = {p["metadata"]["name"] for p in pods(cluster, **{"app.kubernetes.io/component": "app",
                                                                    "version": "v2"})}
    restored = False
    try:
        with Visitors(cluster.gateway_port, new=3, pinned=1, returning=("v1", "v2"), seconds=300) as v:
            t0 = time.monotonic()
            upgrade(cluster, "istio.canary.weights.stable=100", "istio.canary.weights.canary=0")
            wait(lambda: versions(answers(cluster, 40, headers={"Cookie": f"{COOKIE}=v2"})) == {"v1": 40},
                 60, "the rollback's routes at the gateway")
            applied = time.monotonic() - t0
            kinds = {"new": {}, "v2 cookie": dict(headers={"Cookie": f"{COOKIE}=v2"}),
                     "x-version v2": dict(headers={"x-version": "v2"}), "canary. host": dict(host=f"canary.{HOST}")}
            for what, kw in kinds.items():
                rs = answers(cluster, 100, **kw)
                assert versions(rs) == {"v1": 100}, f"100/0, {what}: {versions(rs)}"
                if what in ("new", "v2 cookie"):  # the v2 cookie is overwritten with v1
                    assert {r.set_cookie for r in rs} == {f"{COOKIE}=v1"}, {r.set_cookie for r in rs}
            # At weight 0 the canary keeps its pods, Ready, without traffic (docs/helm.md).
            kept = [p for p in pods(cluster, **{"app.kubernetes.io/component": "app", "version": "v2"}) if ready(p)]
            assert {p["metadata"]["name"] for p in kept} == canary_pods, (kept, canary_pods)
            rolled = time.monotonic() - t0
            rollback(cluster, first)
            restored = True
            wait(lambda: any(r.version == "v2" for r in answers(cluster, 60)), 60,
                 "the canary back after the rollback")
            back = time.monotonic() - t0
    finally:
        if not restored:
            rollback(cluster, first)
    statuses = v.statuses()
    failed = Counter((round(r[0] - t0), r[1], r[3]) for r in v.records if r[3] != 200)
    print(f"helm upgrade to 100/0: routes at the gateway in {applied:.1f} s, the canary's pods kept; "
          f"helm rollback at {rolled:.0f} s: canary serving again at {back:.0f} s; under load {len(v.records)} "
          f"answers {statuses}; failed by (second, visitor kind, status): {sorted(failed.items())}")
    assert statuses == {200: len(v.records)}, statuses


def test_helm_upgrade_switches_the_sticky_cookie_and_the_mirror_live_with_no_failed_request(cluster):
    first = deployed_revision(cluster)
    v2_cookie = dict(headers={"Cookie": f"{COOKIE}=v2"})
    restored = False
    try:
        with Visitors(cluster.gateway_port, new=3, pinned=1, returning=("v1", "v2"), seconds=400) as v:
            upgrade(cluster, "istio.canary.stickyCookie.enabled=false")
            wait(lambda: "v1" in versions(answers(cluster, 40, **v2_cookie)), 60, "stickiness off at the gateway")
            off = answers(cluster, 400, **v2_cookie)
            seen_off = versions(off)
            assert not any(r.set_cookie for r in off), "no cookie while stickiness is off"
            assert 0 < seen_off["v2"] < 400 * 0.2, seen_off  # the v2 cookie no longer pins: ~10 % land on v2
            rollback(cluster, first)
            wait(lambda: versions(answers(cluster, 40, **v2_cookie)) == {"v2": 40}, 60, "stickiness back on")
            on = versions(answers(cluster, 200, **v2_cookie))
            assert on == {"v2": 200}, on
            shares = {}
            for percent in (50, 25):
                upgrade(cluster, f"modelService.shadow.mirror.percent={percent}")
                time.sleep(3)  # istiod's push reaches the apps' sidecars within a second
                shares[percent] = mirrored_share(cluster, 1500)
            rollback(cluster, first)
            restored = True
    finally:
        if not restored:
            rollback(cluster, first)
    statuses = v.statuses()
    print(f"sticky cookie off: 400 returning v2 visitors -> {seen_off['v2']} on v2, no Set-Cookie; back on "
          f"(helm rollback): {on['v2']} of 200; mirror 50 % -> {shares[50]:.1%}, 25 % -> {shares[25]:.1%} at the "
          f"shadow; under load {len(v.records)} answers {statuses}")
    assert statuses == {200: len(v.records)}, statuses
    assert 0.43 <= shares[50] <= 0.57 and 0.18 <= shares[25] <= 0.32, shares


def mirrored_share(cluster, calls: int) -> float:
    """The shadow's calls over the serving model's, over `calls` v1-pinned messages (app v1
    has no cache: one model call each) beside whatever load runs."""
    def counted() -> tuple[int, int]:
        by = model_calls_by_version(cluster)
        return sum(by["v1"].values()), sum(by["v2"].values())

    s0, m0 = counted()
    answers(cluster, calls, headers={"Cookie": f"{COOKIE}=v1"})
    time.sleep(1)  # the mirrored calls are fire and forget: let the last ones land
    s1, m1 = counted()
    return (m1 - m0) / max(1, s1 - s0)


def test_the_shadow_gets_its_share_of_open_inference_protocol_calls_through_a_sidecar(cluster):
    """ModelInfer calls from the app's pod, through its sidecar, to the model Service are
    mirrored as Classify calls are, and the shadow scores and compares them."""
    assert GRPCURL, "GRPCURL_V1 is not set (tests/cluster/run.sh builds grpcurl)"
    app = pods(cluster, **{"app.kubernetes.io/component": "app", "version": "v1"})[0]
    text = "WINNER!! Claim your free prize now, call 09061701461"
    body = json.dumps({"model_name": "sms-spam", "inputs": [{
        "name": "text", "datatype": "BYTES", "shape": [1],
        "contents": {"bytes_contents": [base64.b64encode(text.encode()).decode()]}}]})

    def oip_calls() -> dict[str, float]:
        out: dict[str, float] = {}
        for p in pods(cluster, **{"app.kubernetes.io/component": "model"}):
            got = exec_in(cluster, p, "model", "curl", "-sS", "-m", "5", "http://127.0.0.1:9464/metrics")
            assert got.returncode == 0, got.stderr
            v = p["metadata"]["labels"]["version"]
            for name, pattern in (
                    ("predicted", r'^sms_model_predictions_total\{[^}]*protocol="oip-grpc"[^}]*\} (\S+)$'),
                    ("compared", r'^sms_shadow_comparisons_total(?:\{[^}]*\})? (\S+)$')):
                total = sum(float(m.group(1)) for m in re.finditer(pattern, got.stdout, re.M))
                out[f"{v} {name}"] = out.get(f"{v} {name}", 0) + total
        return out

    before = oip_calls()
    n = 200
    # One grpcurl run per call inside the app's pod: its sidecar captures each connection.
    script = (f"for i in $(seq {n}); do {GRPCURL} -plaintext -max-time 5 -d '{body}' sms-app-model:8081 "
              f"inference.GRPCInferenceService/ModelInfer > /dev/null || exit 1; done")
    out = exec_in(cluster, app, "app", "sh", "-c", script, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    time.sleep(1)
    after = oip_calls()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(f"Open Inference Protocol through the app's sidecar: {n} ModelInfer calls -> {delta}")
    assert delta["v1 predicted"] == n, delta
    assert 0.15 * n <= delta["v2 predicted"] <= 0.35 * n, delta
    assert delta["v2 compared"] >= delta["v2 predicted"], delta
