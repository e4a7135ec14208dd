"""The ingress gateway as istiod programs it from the chart's objects on the cluster: it
closes idle connections to the app before the app does, and the seed's consistent-hash
recipe (what the chart's cookie routes replace) lets users flip between versions."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from conftest import COOKIE, deployed_revision, post, wait

APP = "sms-app-app"


def gateway_pod(cluster) -> dict:
    (pod,) = [p for p in cluster.json("get", "pods", "-n", "istio-system")["items"]
              if p["metadata"]["labels"].get("app") == "istio-ingressgateway"]
    return pod


def app_clusters(cluster) -> list[dict]:
    """The gateway Envoy's clusters for the app's Service (its own admin, from inside its pod)."""
    pod = gateway_pod(cluster)
    out = cluster.kubectl("exec", "-n", "istio-system", pod["metadata"]["name"], "--", "curl", "-sS", "-m", "10",
                          "http://127.0.0.1:15000/config_dump?resource=dynamic_active_clusters", timeout=30)
    configs = json.loads(out.stdout)["configs"]
    return [c["cluster"] for c in configs if f"|{APP}." in c["cluster"]["name"]]


def test_the_gateway_closes_idle_connections_to_the_app_before_the_app_does(cluster):
    """The chart's DestinationRule `connectionPool.http.idleTimeout` (the app's
    IDLE_TIMEOUT_SECS minus 5 s), as istiod translates it, on every app cluster of the
    gateway: the proxy never sends a request on a connection the app is closing."""
    clusters = app_clusters(cluster)
    assert clusters

    def idle(c: dict) -> str | None:
        for opts in c.get("typed_extension_protocol_options", {}).values():
            timeout = opts.get("common_http_protocol_options", {}).get("idle_timeout")
            if timeout:
                return timeout
        return c.get("common_http_protocol_options", {}).get("idle_timeout")

    assert {c["name"]: idle(c) for c in clusters} == {c["name"]: "25s" for c in clusters}
    app_env = cluster.json("get", "configmap", "-n", "sms-app", APP)["data"]
    assert app_env["IDLE_TIMEOUT_SECS"] == "30", app_env


def test_the_seeds_consistent_hash_recipe_lets_users_flip(cluster):
    """The seed's recipe (section 6.2): a weighted split plus a DestinationRule
    `consistentHash.httpCookie` on the version cookie and no cookie routes, set with the
    chart's own values (stickiness off, the pod-affinity cookie named as the version
    cookie). istiod turns the consistent hash into a ring-hash choice of a pod inside the
    subset the weighted route already picked per request, so a returning visitor with the
    cookie still lands on v2 one request in ten."""
    def ring_hash() -> bool:
        v2 = [c for c in app_clusters(cluster) if c["name"].startswith(f"outbound|8080|v2|{APP}.")]
        return bool(v2) and v2[0].get("lb_policy") == "RING_HASH"

    first = deployed_revision(cluster)
    out = cluster.helm("upgrade", "sms-app", "helm/", "-n", "sms-app", "--reuse-values", "--set",
                       f"istio.canary.stickyCookie.enabled=false,istio.canary.stickyCookie.name=unused-cookie,"
                       f"istio.podAffinityCookie={COOKIE}")
    assert out.returncode == 0, out.stderr
    try:
        vs = cluster.json("get", "virtualservice", "-n", "sms-app", "sms-app-vs")
        assert not [r["name"] for r in vs["spec"]["http"] if r["name"].startswith("sticky")], vs["spec"]["http"]
        wait(ring_hash, 60, "the gateway's v2 cluster on ring hash (istiod's reading of consistentHash)")
        visitors, further = 100, 20

        def visit(i: int) -> tuple[str | None, int, str]:
            first = post(cluster.gateway_port, i)
            again = dict(headers={"Cookie": first.set_cookie}) if first.set_cookie else {}
            flips = sum(post(cluster.gateway_port, i * 100 + k, **again).version != first.version
                        for k in range(further))
            return first.version, flips, first.set_cookie or ""

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(visit, range(visitors)))
    finally:
        out = cluster.helm("rollback", "sms-app", str(first), "-n", "sms-app")
        assert out.returncode == 0, out.stderr
    flips = sum(f for _, f, _ in results)
    flipped = sum(1 for _, f, _ in results if f)
    cookies = {c.split("=")[0] for _, _, c in results}
    print(f"seed recipe (consistentHash only): {visitors} visitors x {further} requests -> {flips} flips, "
          f"{flipped} visitors saw both versions ({dict(Counter(v for v, _, _ in results))}); cookie {cookies}")
    assert cookies == {COOKIE}, cookies  # Envoy did set the hash cookie ...
    assert flipped >= visitors // 4 and flips >= visitors * further // 25, (flips, flipped)  # ... users flip anyway
    wait(lambda: not ring_hash(), 60, "the chart's DestinationRule back at the gateway")
