"""The chart as users run it: installed by the real helm on a real API server, its pods
scheduled, started and Ready on the node; the API server's own validation behind Helm's;
a deleted pod recreated by its ReplicaSet."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import Visitors, pod_pids, ready, wait

DEPLOYMENTS = {"sms-app-app", "sms-app-app-canary", "sms-app-model", "sms-app-model-shadow"}


def test_the_release_runs_on_a_real_api_server(cluster):
    out = cluster.output()
    print(out[out.find("the API server is ready"):])
    (node,) = cluster.json("get", "nodes")["items"]
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True", node["status"]["conditions"]
    version = cluster.json("version")["serverVersion"]["gitVersion"]
    assert version == "v1.36.1", version

    releases = {r["name"]: r for r in json.loads(cluster.helm("list", "-n", "sms-app", "-o", "json").stdout)}
    assert releases["sms-app"]["status"] == "deployed", releases

    deployments = {d["metadata"]["name"]: d for d in cluster.json("get", "deployments", "-n", "sms-app")["items"]}
    assert set(deployments) == DEPLOYMENTS
    pods = cluster.pods()
    replicas = sum(d["spec"]["replicas"] for d in deployments.values())
    assert len(pods) == replicas and all(ready(p) for p in pods), [
        (p["metadata"]["name"], p["status"].get("phase")) for p in pods]
    for p in pods:  # every pod on the node, with an address of the cluster's pod range
        assert p["spec"]["nodeName"] == "sms-node"
        assert p["status"]["podIP"].startswith("198.18."), p["status"]
    # The Services have endpoints: the pods' readiness reached the endpoints controller.
    slices = cluster.json("get", "endpointslices", "-n", "sms-app")["items"]
    ready_addresses = {s["metadata"]["labels"]["kubernetes.io/service-name"]:
                       [e for e in s.get("endpoints") or [] if e["conditions"].get("ready")] for s in slices}
    assert ready_addresses.get("sms-app-model"), ready_addresses


def test_the_api_server_refuses_what_the_schema_lets_through_and_helm_keeps_the_release(cluster):
    # A label value the chart's schema takes as any string, but Kubernetes does not.
    out = cluster.helm("upgrade", "sms-app", "helm/", "-n", "sms-app", "--reuse-values",
                       "--set", "monitoring.labels.release=not a label value!")
    print(out.stderr.strip())
    assert out.returncode != 0
    assert "Invalid value" in out.stderr and "not a label value!" in out.stderr, out.stderr
    history = json.loads(cluster.helm("history", "sms-app", "-n", "sms-app", "-o", "json").stdout)
    print([(h["revision"], h["status"]) for h in history])
    assert history[-1]["status"] == "failed"
    assert [h["status"] for h in history[:-1]][-1] == "deployed", history
    assert all(ready(p) for p in cluster.pods())


def serving_model_pods(cluster) -> list[dict]:
    return [p for p in cluster.pods() if p["metadata"]["labels"].get("app.kubernetes.io/component") == "model"
            and p["metadata"]["labels"].get("version") == "v1"]


def model_status(pod: dict) -> dict:
    return next(s for s in pod["status"]["containerStatuses"] if s["name"] == "model")


def test_a_deleted_model_pod_is_recreated_and_ready_and_users_see_only_200_or_503(cluster):
    before = serving_model_pods(cluster)
    old = before[0]

    def replaced():
        pods = serving_model_pods(cluster)
        uids = {p["metadata"]["uid"] for p in pods}
        return pods if (old["metadata"]["uid"] not in uids and len(pods) == len(before)
                        and all(ready(p) for p in pods)) else None

    with Visitors(cluster.gateway_port, new=4, pinned=0, returning=(), seconds=150) as users:
        users.canary_share(50)  # under way
        t0 = time.monotonic()
        cluster.kubectl("delete", "pod", "-n", "sms-app", old["metadata"]["name"], "--wait=false")
        pods = wait(replaced, 120, "the model pod to be recreated and Ready")
        users.canary_share(50)  # and still served after
    new = [p for p in pods if p["metadata"]["uid"] not in {b["metadata"]["uid"] for b in before}]
    assert len(new) == 1, new
    statuses = users.statuses()
    print(f"recreated as {new[0]['metadata']['name']} ({new[0]['status']['podIP']}), "
          f"Ready after {time.monotonic() - t0:.1f} s; users' answers meanwhile: {statuses}")
    assert set(statuses) <= {200, 503} and statuses.get(200), statuses


def test_a_killed_model_process_is_restarted_and_ready_and_users_see_only_200_or_503(cluster):
    pod = serving_model_pods(cluster)[0]
    name = pod["metadata"]["name"]
    restarts = model_status(pod)["restartCount"]
    pids = pod_pids(cluster, pod)

    def restarted():
        p = cluster.json("get", "pod", "-n", "sms-app", name)
        return p if model_status(p)["restartCount"] > restarts and ready(p) else None

    with Visitors(cluster.gateway_port, new=4, pinned=0, returning=(), seconds=150) as users:
        users.canary_share(50)
        t0 = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        p = wait(restarted, 120, f"{name} to be restarted and Ready")
        users.canary_share(50)
    statuses = users.statuses()
    last = model_status(p)["lastState"]["terminated"]
    print(f"{name}: restarted ({model_status(p)['restartCount']} restarts, "
          f"last exit {last.get('exitCode')}/{last.get('signal', '')} {last.get('reason')}), "
          f"Ready after {time.monotonic() - t0:.1f} s; users' answers meanwhile: {statuses}")
    assert last["exitCode"] != 0
    assert set(statuses) <= {200, 503} and statuses.get(200), statuses
