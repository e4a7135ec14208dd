"""The Envoys' configuration comes from Istio's own code over xDS: the bootstrap
holds only the way to istio-xds, every listener, route and cluster is a dynamic resource
that istio-xds (Istio's pilot config generator) pushed over ADS, named as Istio names them,
and both proxies acknowledged it."""

from __future__ import annotations

import json

import requests

from harness import HOST, MODEL

ISTIO_CLUSTER = f"outbound|8081|v1|{MODEL}.sms-app.svc.cluster.local"


def dump_section(dump: dict, kind: str) -> dict:
    return next(c for c in dump["configs"] if c["@type"].endswith("." + kind))


def test_every_listener_route_and_cluster_came_over_ads_from_istio(mesh):
    st = mesh()
    for which in ("gateway", "sidecar"):
        dump = st.config_dump(which)
        boot = dump_section(dump, "BootstrapConfigDump")["bootstrap"]
        assert boot["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "xds-grpc"
        assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["xds-grpc"]
        assert "listeners" not in boot["static_resources"]

        clusters = dump_section(dump, "ClustersConfigDump")
        assert [c["cluster"]["name"] for c in clusters.get("static_clusters", [])] == ["xds-grpc"]
        dynamic = {c["cluster"]["name"]: c["version_info"] for c in clusters["dynamic_active_clusters"]}
        assert ISTIO_CLUSTER in dynamic, sorted(dynamic)
        assert "BlackHoleCluster" in dynamic  # Istio's own, not the chart's: the generator at work

        listeners = dump_section(dump, "ListenersConfigDump")
        assert not listeners.get("static_listeners")
        active = [listener for listener in listeners["dynamic_listeners"] if "active_state" in listener]
        assert active and all(listener["active_state"]["version_info"] for listener in active)

        routes = dump_section(dump, "RoutesConfigDump")
        assert not routes.get("static_route_configs")
        assert routes["dynamic_route_configs"]

        stats = st.admin(which, "/stats?filter=^control_plane.connected_state$").text
        assert "control_plane.connected_state: 1" in stats, stats
        for xds, prefix in (("lds", r"listener_manager\.lds"), ("cds", r"cluster_manager\.cds"),
                            ("rds", r"http\..*\.rds\..*")):
            ok = st.admin(which, f"/stats?filter=^{prefix}\\.update_success$").text
            assert any(int(line.rsplit(":", 1)[1]) > 0 for line in ok.splitlines()), (which, xds, ok)
            rejected = st.admin(which, f"/stats?filter=^{prefix}\\.update_rejected$").text
            assert rejected and all(line.rstrip().endswith(": 0") for line in rejected.splitlines()), \
                (which, xds, rejected)

    # the gateway's virtual hosts are the chart's Gateway hosts, its routes the VirtualService's by name
    routes = dump_section(st.config_dump("gateway"), "RoutesConfigDump")["dynamic_route_configs"]
    vhosts = [vh for r in routes for vh in r["route_config"].get("virtual_hosts", [])]
    domains = {d for vh in vhosts for d in vh["domains"]}
    assert HOST in domains and f"canary.{HOST}" in domains, domains
    names = [rt.get("name") for vh in vhosts if HOST in vh["domains"] for rt in vh["routes"]]
    assert names[:1] == ["force-v2-host"] and "split" in names, names

    # istio-xds lists both proxies as connected and in sync
    r = requests.get(f"http://127.0.0.1:{st.ports.istiod}/proxies", timeout=5)
    assert r.status_code == 200, r.text
    proxies = json.loads(r.text)["proxies"]
    assert len(proxies) == 2 and any(p.startswith("router~") for p in proxies) \
        and any(p.startswith("sidecar~") for p in proxies), proxies


def test_a_request_through_the_istio_programmed_envoys_reaches_the_services(mesh, client):
    st = mesh()
    r = client.post(1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["app_version"] in ("v1", "v2") and body["model_version"] == "v1"
    # the app reached the model through the sidecar's Istio cluster for subset v1
    # (Istio's clusters' stat names end with ";": its tag-extraction delimiter)
    stats = st.admin("sidecar", f"/stats?filter=^cluster.{ISTIO_CLUSTER.replace('|', '.')}.*upstream_rq_total$").text
    assert stats and int(stats.rsplit(":", 1)[1]) > 0, stats


def test_the_gateway_closes_idle_connections_to_the_app_before_the_app_does(mesh):
    """The chart's DestinationRule `connectionPool.http.idleTimeout` (the app's
    IDLE_TIMEOUT_SECS minus 5 s), as Istio translates it, on every app cluster of the
    gateway: the proxy never sends a request on a connection the app is closing."""
    st = mesh()
    clusters = dump_section(st.config_dump("gateway"), "ClustersConfigDump")["dynamic_active_clusters"]
    app = [c["cluster"] for c in clusters if "|sms-app-app." in c["cluster"]["name"]]
    assert app, sorted(c["cluster"]["name"] for c in clusters)

    def idle(cluster: dict) -> str | None:
        for opts in cluster.get("typed_extension_protocol_options", {}).values():
            timeout = opts.get("common_http_protocol_options", {}).get("idle_timeout")
            if timeout:
                return timeout
        return cluster.get("common_http_protocol_options", {}).get("idle_timeout")

    assert {c["name"]: idle(c) for c in app} == {c["name"]: "25s" for c in app}
