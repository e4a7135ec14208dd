"""The experiment keeps serving while its control plane is gone: istiod's process killed
(`kill -9`, found by its pod's network namespace) under a steady load through the ingress
gateway; the Envoys keep the configuration they have, the kubelet restarts istiod, and a
`helm upgrade` made after it is back reaches the gateway."""

from __future__ import annotations

import os
import signal
import time

from conftest import Visitors, deployed_revision, pod_pids, ready, wait


def istiod(cluster) -> dict:
    (pod,) = [p for p in cluster.json("get", "pods", "-n", "istio-system")["items"]
              if p["metadata"]["labels"].get("app") == "istiod"]
    return pod


def restarts(pod: dict) -> int:
    return sum(c["restartCount"] for c in pod["status"]["containerStatuses"])


def test_the_gateway_keeps_serving_while_istiod_is_killed_and_follows_it_once_back(cluster):
    pod = istiod(cluster)
    before = restarts(pod)
    with Visitors(cluster.gateway_port, new=3, pinned=1, returning=("v1", "v2"), seconds=300) as v:
        v.canary_share(50)
        t0 = time.monotonic()
        for pid in pod_pids(cluster, pod):
            os.kill(pid, signal.SIGKILL)
        back = wait(lambda: (p := istiod(cluster)) and restarts(p) > before and ready(p) and p, 180,
                    "istiod restarted and Ready")
        ready_after = time.monotonic() - t0
        during = len(v.records)
        before_upgrade = deployed_revision(cluster)
        out = cluster.helm("upgrade", "sms-app", "helm/", "-n", "sms-app", "--reuse-values",
                           "--set", "istio.canary.weights.stable=50,istio.canary.weights.canary=50")
        assert out.returncode == 0, out.stderr
        wait(lambda: v.canary_share(100) > 0.35, 60, "the 50/50 weights at the gateway")
        pushed = time.monotonic() - t0 - ready_after
        assert cluster.helm("rollback", "sms-app", str(before_upgrade), "-n", "sms-app").returncode == 0
        wait(lambda: v.canary_share(100) < 0.25, 60, "the weights back at the gateway")
    statuses = v.statuses()
    print(f"istiod killed under load: Ready again after {ready_after:.0f} s ({restarts(back)} restarts); "
          f"{during} answers meanwhile; a helm upgrade after it reached the gateway in {pushed:.1f} s; "
          f"all answers {statuses}")
    assert statuses == {200: len(v.records)}, statuses
