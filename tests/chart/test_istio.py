"""Istio objects: canary routing with the sticky version cookie, forced versions,
rollback, the model mirror, mTLS and the model's AuthorizationPolicy; the mesh-level
install profile in istio/."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import ROOT, http_routes, parse_set, reachable_subsets, render, route_request

HOST = "sms-istio.local"
APP_HOST = "sms-app-app"
COOKIE = "sms-app-version"


def cookie_attrs(ttl: int) -> str:
    return f"Max-Age={ttl}; Path=/; HttpOnly; SameSite=Lax"


def split_route(vs: dict) -> dict:
    (route,) = [r for r in http_routes(vs) if "match" not in r]
    assert http_routes(vs)[-1] is route, "the weighted route must come last"
    return route


def assert_split(vs: dict, weights: dict[str, int], ttl: int = 3600):
    route = split_route(vs)
    got = {d["destination"]["subset"]: d["weight"] for d in route["route"]}
    assert got == weights
    for d in route["route"]:
        assert d["destination"]["host"] == APP_HOST
        assert d["destination"]["port"] == {"number": 8080}
        subset = d["destination"]["subset"]
        assert d["headers"]["response"]["add"] == {"Set-Cookie": f"{COOKIE}={subset}; {cookie_attrs(ttl)}"}


def test_gateway_serves_the_hosts_and_forced_version_hosts(scenario):
    gw = scenario("defaults").get("Gateway", "sms-app-gateway")
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    (server,) = gw["spec"]["servers"]
    assert server["port"] == {"number": 80, "name": "http", "protocol": "HTTP"}
    assert server["hosts"] == [HOST, f"stable.{HOST}", f"canary.{HOST}"]
    vs = scenario("defaults").get("VirtualService", "sms-app-vs")
    assert vs["spec"]["hosts"] == server["hosts"]
    assert vs["spec"]["gateways"] == ["sms-app-gateway"]


def test_hosts_are_tunable(scenario):
    r = render(parse_set("istio.hosts={exp.example.org,sms.example.org}"), tag="hosts")
    hosts = r.get("Gateway", "sms-app-gateway")["spec"]["servers"][0]["hosts"]
    assert hosts == ["exp.example.org", "stable.exp.example.org", "canary.exp.example.org",
                     "sms.example.org", "stable.sms.example.org", "canary.sms.example.org"]
    vs = r.get("VirtualService", "sms-app-vs")
    assert reachable_subsets(route_request(vs, "canary.sms.example.org")) == {"v2": 100}
    assert reachable_subsets(route_request(vs, "stable.exp.example.org:80")) == {"v1": 100}


@pytest.mark.parametrize("name", ["defaults", "canary-on"])
def test_canary_routes_in_order(scenario, name):
    vs = scenario(name).get("VirtualService", "sms-app-vs")
    names = [r["name"] for r in http_routes(vs)]
    assert names == ["force-v2-host", "force-v1-host", "force-v2-header", "force-v1-header",
                     "sticky-v2", "sticky-v1", "split"]
    assert_split(vs, {"v1": 90, "v2": 10})
    assert scenario(name).find("Deployment", "sms-app-app-canary") is not None


# (authority, headers) -> the subset(s) the request may reach, with the canary on
CANARY_CASES = [
    (HOST, {}, {"v1": 90, "v2": 10}),  # a new user: the weighted split
    (f"canary.{HOST}", {}, {"v2": 100}),
    (f"canary.{HOST}:80", {}, {"v2": 100}),
    (f"stable.{HOST}", {}, {"v1": 100}),
    (f"stable.{HOST}", {"cookie": f"{COOKIE}=v2"}, {"v1": 100}),  # the forced host beats the cookie
    (HOST, {"x-version": "v2"}, {"v2": 100}),
    (HOST, {"x-version": "v1", "cookie": f"{COOKIE}=v2"}, {"v1": 100}),
    (HOST, {"cookie": f"{COOKIE}=v2"}, {"v2": 100}),
    (HOST, {"cookie": f"{COOKIE}=v1"}, {"v1": 100}),
    (HOST, {"cookie": f"theme=dark; {COOKIE}=v2; lang=en"}, {"v2": 100}),
    (HOST, {"cookie": f"theme=dark;{COOKIE}=v1"}, {"v1": 100}),
    (HOST, {"cookie": f"x{COOKIE}=v2"}, {"v1": 90, "v2": 10}),  # another cookie's name
    (HOST, {"cookie": f"{COOKIE}=v22"}, {"v1": 90, "v2": 10}),  # not a known version
    (HOST, {"x-version": "v3"}, {"v1": 90, "v2": 10}),
]


@pytest.mark.parametrize("authority,headers,expected", CANARY_CASES)
def test_request_routing_with_canary(scenario, authority, headers, expected):
    vs = scenario("defaults").get("VirtualService", "sms-app-vs")
    assert reachable_subsets(route_request(vs, authority, headers)) == expected


def test_weights_80_20_as_helm_set(scenario):
    r = scenario("weights-80-20")
    vs = r.get("VirtualService", "sms-app-vs")
    assert_split(vs, {"v1": 80, "v2": 20})
    assert "80% of new users get v1, 20% get v2" in r.notes


def test_cookie_name_and_ttl(scenario):
    for ttl, seconds in (("1h", 3600), ("90m", 5400), ("600s", 600), ("120", 120)):
        r = render(parse_set(f"istio.canary.stickyCookie.name=exp,istio.canary.stickyCookie.ttl={ttl}"),
                   tag=f"cookie-{seconds}")
        vs = r.get("VirtualService", "sms-app-vs")
        route = split_route(vs)
        assert [d["headers"]["response"]["add"]["Set-Cookie"] for d in route["route"]] == [
            f"exp=v1; {cookie_attrs(seconds)}", f"exp=v2; {cookie_attrs(seconds)}"]
        assert reachable_subsets(route_request(vs, HOST, {"cookie": "exp=v2"})) == {"v2": 100}
        assert reachable_subsets(route_request(vs, HOST, {"cookie": f"{COOKIE}=v2"})) == {"v1": 90, "v2": 10}


def test_sticky_cookie_switches_off_at_runtime(scenario):
    r = render(parse_set("istio.canary.stickyCookie.enabled=false"), tag="sticky-off")
    vs = r.get("VirtualService", "sms-app-vs")
    assert not [x["name"] for x in http_routes(vs) if x["name"].startswith("sticky-")]
    assert all("headers" not in d for d in split_route(vs)["route"]), "no Set-Cookie without stickiness"
    # a cookie from before the switch no longer pins anyone: the split decides
    assert reachable_subsets(route_request(vs, HOST, {"cookie": f"{COOKIE}=v2"})) == {"v1": 90, "v2": 10}
    # forced versions still work
    assert reachable_subsets(route_request(vs, HOST, {"x-version": "v2"})) == {"v2": 100}


def every_destination(vs: dict):
    for route in http_routes(vs):
        for d in route.get("route", []):
            yield route["name"], d["destination"]
        if "mirror" in route:
            yield route["name"], route["mirror"]


@pytest.mark.parametrize("name", ["canary-weight-0", "canary-disabled"])
def test_rollback_no_route_reaches_v2(scenario, name):
    r = scenario(name)
    vss = r.all("VirtualService")
    assert {v["metadata"]["name"] for v in vss} == {"sms-app-vs", "sms-app-model-vs"}
    for vs in vss:
        for route_name, dest in every_destination(vs):
            assert dest.get("subset") != "v2", f"{vs['metadata']['name']} route {route_name} reaches v2"
    vs = r.get("VirtualService", "sms-app-vs")
    assert [x["name"] for x in http_routes(vs)] == ["force-v1-host", "force-v1-header", "sticky-v1", "split"]
    assert_split(vs, {"v1": 100})
    # A user pinned to v2, or forcing it, lands on v1 and gets a v1 cookie back.
    for authority, headers in ((HOST, {"cookie": f"{COOKIE}=v2"}), (f"canary.{HOST}", {}),
                               (HOST, {"x-version": "v2"}), (HOST, {"cookie": f"a=b; {COOKIE}=v2"})):
        route = route_request(vs, authority, headers)
        assert reachable_subsets(route) == {"v1": 100}, (authority, headers)
        assert route["name"] == "split"
        assert route["route"][0]["headers"]["response"]["add"]["Set-Cookie"].startswith(f"{COOKIE}=v1;")
    # At weight 0 the canary's pods keep running without traffic (ramping up again never
    # routes users to pods that are not ready yet); switched off, they go.
    assert ("sms-app-app-canary" in r.names("Deployment")) == (name == "canary-weight-0")
    # The subsets stay defined, so ramping up again is one helm upgrade.
    assert [s["name"] for s in r.get("DestinationRule", "sms-app-dr")["spec"]["subsets"]] == ["v1", "v2"]


def test_app_destination_rule_subsets(scenario):
    dr = scenario("defaults").get("DestinationRule", "sms-app-dr")
    assert dr["spec"]["host"] == APP_HOST
    assert dr["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}},
                                     {"name": "v2", "labels": {"version": "v2"}}]
    # No consistent hash on the version cookie: it cannot pin a version (istio#9764).
    # The proxies close idle connections to the app before the app does (its 30 s).
    assert dr["spec"]["trafficPolicy"] == {"connectionPool": {"http": {"idleTimeout": "25s"}}}
    r = render(parse_set("istio.podAffinityCookie=sms-app-pod,appService.idleTimeoutSeconds=60"), tag="pod-affinity")
    policy = r.get("DestinationRule", "sms-app-dr")["spec"]["trafficPolicy"]
    assert policy["loadBalancer"] == {"consistentHash": {"httpCookie": {"name": "sms-app-pod", "path": "/", "ttl": "3600s"}}}
    assert policy["connectionPool"]["http"]["idleTimeout"] == "55s"
    assert r.get("ConfigMap", "sms-app-app")["data"]["IDLE_TIMEOUT_SECS"] == "60"


def test_model_mirror_at_25_percent(scenario):
    r = scenario("shadow-25")
    vs = r.get("VirtualService", "sms-app-model-vs")
    assert vs["spec"]["hosts"] == ["sms-app-model"]
    assert "gateways" not in vs["spec"]  # mesh-internal
    http, route = http_routes(vs)
    assert route["route"] == [{"destination": {"host": "sms-app-model", "subset": "v1", "port": {"number": 8081}}}]
    assert route["mirror"] == {"host": "sms-app-model", "subset": "v2", "port": {"number": 8081}}
    assert route["mirrorPercentage"] == {"value": 25}
    # The Open Inference Protocol's HTTP port: matched first, routed and mirrored on its own port.
    assert (http["name"], http["match"]) == ("inference-http", [{"port": 8082}])
    assert http["route"] == [{"destination": {"host": "sms-app-model", "subset": "v1", "port": {"number": 8082}}}]
    assert http["mirror"] == {"host": "sms-app-model", "subset": "v2", "port": {"number": 8082}}
    assert http["mirrorPercentage"] == {"value": 25}
    dr = r.get("DestinationRule", "sms-app-model-dr")
    assert dr["spec"]["host"] == "sms-app-model"
    assert dr["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}},
                                     {"name": "v2", "labels": {"version": "v2"}}]
    assert "25% of model calls are mirrored" in r.notes


def test_mirror_percentage_is_tunable_and_off_without_shadow(scenario):
    r = render(parse_set("modelService.shadow.enabled=true,modelService.shadow.mirror.percent=12.5"), tag="mirror-12.5")
    for route in http_routes(r.get("VirtualService", "sms-app-model-vs")):
        assert route["mirrorPercentage"] == {"value": 12.5}
    for name in ("defaults", "canary-weight-0"):
        for route in http_routes(scenario(name).get("VirtualService", "sms-app-model-vs")):
            assert "mirror" not in route and "mirrorPercentage" not in route
    r = render(parse_set("modelService.shadow.enabled=true,modelService.shadow.mirror.percent=0"), tag="mirror-0")
    for route in http_routes(r.get("VirtualService", "sms-app-model-vs")):
        assert "mirror" not in route


def test_strict_mtls_with_the_out_of_mesh_exceptions(scenario):
    r = scenario("defaults")
    ns_wide = r.get("PeerAuthentication", "sms-app-strict")
    assert "selector" not in ns_wide["spec"] and ns_wide["spec"]["mtls"] == {"mode": "STRICT"}
    app = r.get("PeerAuthentication", "sms-app-app-http")
    assert app["spec"]["portLevelMtls"] == {8080: {"mode": "PERMISSIVE"}}
    model = r.get("PeerAuthentication", "sms-app-model-metrics")
    assert model["spec"]["mtls"] == {"mode": "STRICT"}
    assert model["spec"]["portLevelMtls"] == {9464: {"mode": "PERMISSIVE"}}  # gRPC 8081 stays STRICT


def test_only_the_app_identity_calls_the_model(scenario):
    r = scenario("defaults")
    ap = r.get("AuthorizationPolicy", "sms-app-model-callers")
    assert ap["spec"]["action"] == "ALLOW"
    assert ap["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "model"
    grpc_rule, metrics_rule = ap["spec"]["rules"]
    assert grpc_rule["from"] == [{"source": {"principals": ["cluster.local/ns/sms-app/sa/sms-app-app"]}}]
    # ListDisagreements can return message texts: not for the app's identity.
    assert grpc_rule["to"] == [{"operation": {"ports": ["8081", "8082"],
                                              "notPaths": ["/sms.v1.SpamClassifier/ListDisagreements"]}}]
    assert "from" not in metrics_rule and metrics_rule["to"] == [{"operation": {"ports": ["9464"]}}]
    # The principal is the app pods' service account.
    for dep in ("sms-app-app", "sms-app-app-canary"):
        assert r.get("Deployment", dep)["spec"]["template"]["spec"]["serviceAccountName"] == "sms-app-app"
    assert r.get("Deployment", "sms-app-model")["spec"]["template"]["spec"]["serviceAccountName"] == "sms-app-model"


def test_only_the_listed_operators_read_the_shadows_disagreements():
    reader = "cluster.local/ns/ops/sa/model-review"
    r = render(parse_set(f"istio.authorizationPolicy.disagreementReaders={{{reader}}}"), tag="readers")
    _, readers_rule, _ = r.get("AuthorizationPolicy", "sms-app-model-callers")["spec"]["rules"]
    assert readers_rule == {"from": [{"source": {"principals": [reader]}}],
                            "to": [{"operation": {"ports": ["8081"],
                                                  "paths": ["/sms.v1.SpamClassifier/ListDisagreements"]}}]}


def kustomize_istio() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "istio")], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_istio_install_profile_takes_the_gateway_ip_from_settings():
    docs = kustomize_istio()
    assert [d["kind"] for d in docs] == ["IstioOperator"]  # the settings object is local-config
    (iop,) = docs
    settings = yaml.safe_load((ROOT / "istio" / "settings.yaml").read_text())
    ip = settings["data"]["ingressGatewayIP"]
    assert ip == "192.168.56.96"
    (gw,) = iop["spec"]["components"]["ingressGateways"]
    assert gw["label"] == {"istio": "ingressgateway"}  # what the chart's Gateway selects
    assert gw["k8s"]["service"]["type"] == "LoadBalancer"
    assert gw["k8s"]["service"]["loadBalancerIP"] == ip
    assert gw["k8s"]["serviceAnnotations"]["metallb.universe.tf/loadBalancerIPs"] == ip
