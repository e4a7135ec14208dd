"""`make mesh` is the experiment on this cluster: `scripts/mesh.sh upgrade` is the real
`helm upgrade --reuse-values` of the running release (a values file relative to the
user's directory), `make mesh-traffic` finds the running cluster's gateway by itself, a
second `make mesh` is refused without touching the first, and an upgrade with no cluster
running says so."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import ROOT, deployed_revision

MESH = str(ROOT / "scripts" / "mesh.sh")


def env_of(cluster) -> dict:
    return {**os.environ, "CLUSTER_DIR": str(cluster.state), "CLUSTER_PROFILE": "debug",
            "CLUSTER_API_PORT": str(cluster.api_port), "CLUSTER_NETNS": cluster.netns,
            "CLUSTER_GATEWAY_PORT": str(cluster.gateway_port), "CLUSTER_PROMETHEUS_PORT": str(cluster.prometheus_port)}


def weights(cluster) -> dict[str, int]:
    """The app's weighted split as the API server holds it (the gateway's VirtualService)."""
    for vs in cluster.json("get", "virtualservice", "-n", "sms-app")["items"]:
        if "gateways" in vs["spec"]:
            routes = next(h["route"] for h in vs["spec"]["http"] if len(h.get("route", [])) == 2)
            return {r["destination"]["subset"]: r.get("weight", 0) for r in routes}
    raise AssertionError("no VirtualService bound to the gateway")


def test_mesh_upgrade_is_helm_upgrade_of_the_running_release(cluster, tmp_path):
    first = deployed_revision(cluster)
    (tmp_path / "mirror.yaml").write_text("modelService:\n  shadow:\n    mirror:\n      percent: 40\n")
    try:
        r = subprocess.run([MESH, "upgrade", "--set", "istio.canary.weights.stable=80,istio.canary.weights.canary=20",
                            "-f", "mirror.yaml"], cwd=tmp_path, env=env_of(cluster), capture_output=True, text=True,
                           timeout=360)
        assert r.returncode == 0, r.stderr[-2000:]
        assert deployed_revision(cluster) == first + 1
        values = json.loads(cluster.helm("get", "values", "sms-app", "-n", "sms-app", "-o", "json").stdout)
        assert values["istio"]["canary"]["weights"] == {"stable": 80, "canary": 20}, values
        assert values["modelService"]["shadow"]["mirror"]["percent"] == 40, values
        assert values["modelService"]["shadow"]["enabled"] is True, "--reuse-values keeps the cluster's local values"
        assert weights(cluster) == {"v1": 80, "v2": 20}
    finally:
        out = cluster.helm("rollback", "sms-app", str(first), "-n", "sms-app", "--wait")
        assert out.returncode == 0, out.stderr
    assert weights(cluster) == {"v1": 90, "v2": 10}
    print(f"scripts/mesh.sh upgrade: revision {first} -> {first + 1} (80/20, mirror 40 % from a relative -f), "
          f"rolled back")


def test_mesh_traffic_finds_the_running_cluster_by_itself(cluster):
    r = subprocess.run(["bash", "scripts/mesh-traffic.sh", "--count", "30", "--concurrency", "3", "--json"], cwd=ROOT,
                       env=env_of(cluster), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == {"200": 30}, summary
    assert f"127.0.0.1:{cluster.gateway_port}" in r.stderr and "Host sms.localhost" in r.stderr, r.stderr


def test_a_second_mesh_is_refused_and_an_upgrade_without_a_cluster_says_so(cluster, tmp_path):
    r = subprocess.run([MESH], cwd=ROOT, env=env_of(cluster), capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "a cluster is already running" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert cluster.proc.poll() is None
    assert all(p["status"]["phase"] == "Running" for p in cluster.pods())
    r = subprocess.run([MESH, "upgrade", "--set", "istio.canary.weights.stable=50"], cwd=ROOT,
                       env={**os.environ, "CLUSTER_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no running cluster" in r.stderr, r.stderr
