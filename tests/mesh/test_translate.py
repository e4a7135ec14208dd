"""The translator on real renders of the chart: what each Istio construct becomes in
Envoy, that the Helm values (and nothing else) drive it, that a real Envoy accepts every
bootstrap, and that anything the chart does not use is refused by name."""

from __future__ import annotations

import copy
import functools
import re
import subprocess

import pytest
import yaml

from harness import APP, MODEL, OUT, ROOT, chart, envoy_binary, translate

EP = {f"{APP}/v1": "127.0.0.1:18001", f"{APP}/v2": "127.0.0.1:18002",
      f"{MODEL}/v1": "127.0.0.1:18011", f"{MODEL}/v2": "127.0.0.1:18012"}
GW, MESH, ADMIN = "127.0.0.1:18000", "127.0.0.1:18010", "127.0.0.1:18099"


@functools.lru_cache(maxsize=None)
def docs(*sets: str) -> tuple:
    return tuple(translate.load_docs(chart.render(chart.values_from(list(sets)))))


def boot(*sets: str, docs_=None, endpoints=None, local=("*",)) -> dict:
    return translate.translate(list(docs_ if docs_ is not None else copy.deepcopy(docs(*sets))),
                               endpoints or EP, GW, MESH, ADMIN, local)


def listener(b: dict, name: str) -> dict:
    (l,) = [x for x in b["static_resources"]["listeners"] if x["name"] == name]
    return l["filter_chains"][0]["filters"][0]["typed_config"]


def vhosts(b: dict, name: str = "gateway") -> list[dict]:
    return listener(b, name)["route_config"]["virtual_hosts"]


def routes(b: dict, name: str = "gateway") -> list[dict]:
    return vhosts(b, name)[0]["routes"]


def by_name(b: dict, route: str, name: str = "gateway") -> dict:
    (r,) = [x for x in routes(b, name) if x["name"] == route]
    return r["route"]


def cluster(host: str, subset: str, port: int = 8080) -> str:
    return f"outbound|{port}|{subset}|{host}.sms-app.svc.cluster.local"


def vs(d, name: str) -> dict:
    return next(x for x in d if x["kind"] == "VirtualService" and x["metadata"]["name"] == name)


# --- the mapping --------------------------------------------------------------------------


def test_gateway_virtual_hosts_are_the_virtualservice_hosts_plus_local():
    b = boot()
    got = [(v["name"], v["domains"]) for v in vhosts(b)]
    assert got == [
        ("sms-istio.local:80", ["sms-istio.local", "sms-istio.local:*"]),
        ("stable.sms-istio.local:80", ["stable.sms-istio.local", "stable.sms-istio.local:*"]),
        ("canary.sms-istio.local:80", ["canary.sms-istio.local", "canary.sms-istio.local:*"]),
        ("local", ["*"]),
    ]
    assert all(v["routes"] == vhosts(b)[0]["routes"] for v in vhosts(b))
    assert [v["name"] for v in vhosts(boot(local=()))][-1] == "canary.sms-istio.local:80"


def test_routes_keep_the_virtualservice_order_and_matches():
    b = boot()
    rendered = vs(docs(), "sms-app-vs")["spec"]["http"]
    assert [r["name"] for r in routes(b)] == [r["name"] for r in rendered]
    assert [r["name"] for r in routes(b)] == ["force-v2-host", "force-v1-host", "force-v2-header",
                                             "force-v1-header", "sticky-v2", "sticky-v1", "split"]
    m = {r["name"]: r["match"] for r in routes(b)}
    assert m["force-v2-host"]["headers"] == [{"name": ":authority", "string_match": {
        "safe_regex": {"regex": rendered[0]["match"][0]["authority"]["regex"]}}}]
    assert m["force-v2-header"]["headers"] == [{"name": "x-version", "string_match": {"exact": "v2"}}]
    assert m["sticky-v2"]["headers"] == [{"name": "cookie", "string_match": {"safe_regex": {
        "regex": r"^(.*;\s*)?sms-app-version=v2(;.*)?$"}}}]
    assert m["split"] == {"prefix": "/"}
    assert by_name(b, "force-v2-host")["cluster"] == cluster(APP, "v2")
    assert by_name(b, "sticky-v1")["cluster"] == cluster(APP, "v1")


def test_split_is_weighted_clusters_with_a_cookie_per_destination():
    split = by_name(boot(), "split")["weighted_clusters"]["clusters"]
    attrs = "Max-Age=3600; Path=/; HttpOnly; SameSite=Lax"
    assert split == [
        {"name": cluster(APP, v), "weight": w, "response_headers_to_add": [{
            "header": {"key": "Set-Cookie", "value": f"sms-app-version={v}; {attrs}"},
            "append_action": "APPEND_IF_EXISTS_OR_ADD"}]}
        for v, w in (("v1", 90), ("v2", 10))
    ]


def test_every_value_flows_from_helm():
    sets = ("istio.canary.weights.stable=80,istio.canary.weights.canary=20",
            "istio.canary.stickyCookie.name=exp,istio.canary.stickyCookie.ttl=2h",
            "istio.canary.forceHeader=x-app,istio.hosts={a.example.org,b.example.org}",
            "appService.canary.version=v7,appService.port=9000")
    ep = {**EP, f"{APP}/v7": "127.0.0.1:18007"}
    b = boot(*sets, endpoints=ep)
    split = by_name(b, "split")["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in split] == [(cluster(APP, "v1", 9000), 80), (cluster(APP, "v7", 9000), 20)]
    assert split[1]["response_headers_to_add"][0]["header"]["value"].startswith("exp=v7; Max-Age=7200;")
    assert [v["domains"][0] for v in vhosts(b)] == ["a.example.org", "stable.a.example.org", "canary.a.example.org",
                                                    "b.example.org", "stable.b.example.org", "canary.b.example.org", "*"]
    m = {r["name"]: r["match"] for r in routes(b)}
    assert m["force-v7-header"]["headers"][0]["name"] == "x-app"
    assert "exp=v7" in m["sticky-v7"]["headers"][0]["string_match"]["safe_regex"]["regex"]
    assert re.fullmatch(m["force-v7-host"]["headers"][0]["string_match"]["safe_regex"]["regex"], "canary.b.example.org:80")


def test_translator_hard_codes_no_value():
    """No weight, cookie, host, header or percentage of the chart in the translator's code
    (docstrings and comments aside): they all come from the rendered objects."""
    import ast

    tree = ast.parse((ROOT / "istio" / "local" / "translate.py").read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    consts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings]
    strings = [c for c in consts if isinstance(c, str)]
    for literal in ("sms-app", "sms-istio", "x-version", "Max-Age", "Set-Cookie", "canary", "stable", "v1", "v2"):
        assert not [s for s in strings if literal in s], f"translate.py hard-codes {literal!r}"
    for number in (90, 10, 80, 20, 25, 8080, 8081):  # (3600 is there: seconds in an hour)
        assert number not in consts, f"translate.py hard-codes {number}"


@pytest.mark.parametrize("sets", [
    ("istio.canary.weights.stable=100,istio.canary.weights.canary=0",),
    ("istio.canary.enabled=false",),
])
def test_rollback_leaves_no_route_to_v2(sets):
    b = boot(*sets)
    text = yaml.safe_dump(listener(b, "gateway"))
    assert cluster(APP, "v2") not in text
    assert "sms-app-version=v2" not in text
    split = by_name(b, "split")
    assert split["cluster"] == cluster(APP, "v1")  # one destination: a plain cluster
    assert (next(r for r in routes(b) if r["name"] == "split")["response_headers_to_add"][0]["header"]["value"]
            .startswith("sms-app-version=v1;"))
    assert not any(c["name"] == cluster(APP, "v2") for c in b["static_resources"]["clusters"])


def test_promotion_leaves_the_weight_0_destination_out():
    split = by_name(boot("istio.canary.weights.stable=0,istio.canary.weights.canary=100"), "split")
    assert [(c["name"], c["weight"]) for c in split["weighted_clusters"]["clusters"]] == [(cluster(APP, "v2"), 100)]


def test_model_listener_is_http2_to_v1_without_mirror_by_default():
    b = boot()
    hcm = listener(b, "mesh-outbound")
    assert hcm["http2_protocol_options"] == {}
    (vh,) = hcm["route_config"]["virtual_hosts"]
    assert vh["domains"] == [MODEL, f"{MODEL}:*", f"{MODEL}.sms-app.svc.cluster.local",
                             f"{MODEL}.sms-app.svc.cluster.local:*", MESH]
    (r,) = vh["routes"]
    assert r["route"]["cluster"] == cluster(MODEL, "v1", 8081)
    assert "request_mirror_policies" not in r["route"]
    (c,) = [c for c in b["static_resources"]["clusters"] if c["name"] == cluster(MODEL, "v1", 8081)]
    assert c["lb_policy"] == "LEAST_REQUEST"
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert opts["explicit_http_config"] == {"http2_protocol_options": {}}
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 18011}


@pytest.mark.parametrize("percent,numerator", [("25", 250_000), ("12.5", 125_000), ("100", 1_000_000)])
def test_mirror_percentage_becomes_a_runtime_fraction(percent, numerator):
    b = boot(f"modelService.shadow.enabled=true,modelService.shadow.mirror.percent={percent}")
    (r,) = listener(b, "mesh-outbound")["route_config"]["virtual_hosts"][0]["routes"]
    assert r["route"]["request_mirror_policies"] == [{
        "cluster": cluster(MODEL, "v2", 8081),
        "runtime_fraction": {"default_value": {"numerator": numerator, "denominator": "MILLION"}}}]
    (c,) = [c for c in b["static_resources"]["clusters"] if c["name"] == cluster(MODEL, "v2", 8081)]
    assert "http2_protocol_options" in str(c)


def test_pod_affinity_cookie_is_a_hash_policy_inside_the_subset():
    b = boot("istio.podAffinityCookie=sms-pod")
    assert by_name(b, "split")["hash_policy"] == [{"cookie": {"name": "sms-pod", "path": "/", "ttl": "3600s"}}]
    app = [c for c in b["static_resources"]["clusters"] if APP in c["name"]]
    assert app and all(c["lb_policy"] == "RING_HASH" for c in app)


def test_workloads_back_the_subsets_by_labels():
    w = {x["name"]: x for x in translate.workloads(list(docs("modelService.shadow.enabled=true")))}
    assert w["sms-app-app"]["subsets"] == [f"{APP}/v1"]
    assert w["sms-app-app-canary"]["subsets"] == [f"{APP}/v2"]
    assert w["sms-app-model"]["subsets"] == [f"{MODEL}/v1"]
    assert w["sms-app-model-shadow"]["subsets"] == [f"{MODEL}/v2"]
    assert w["sms-app-app-canary"]["env"]["CACHE_ENABLED"] == "true"
    assert w["sms-app-model-shadow"]["env"]["METRICS_SOURCE"] == "shadow"
    rolled = {x["name"] for x in translate.workloads(list(docs("istio.canary.weights.stable=100,istio.canary.weights.canary=0")))}
    assert "sms-app-app-canary" not in rolled


@pytest.mark.parametrize("sets", [
    (), ("modelService.shadow.enabled=true,modelService.shadow.mirror.percent=12.5",),
    ("istio.canary.weights.stable=80,istio.canary.weights.canary=20",),
    ("istio.canary.enabled=false",), ("istio.podAffinityCookie=sms-pod",),
    ("istio.canary.weights.stable=0,istio.canary.weights.canary=100",),
])
def test_real_envoy_accepts_the_bootstrap(sets, tmp_path):
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(translate.dump(boot(*sets)))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", cfg, "--disable-hot-restart", "-l", "error"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout + r.stderr, r.stdout + r.stderr


def test_cli_writes_the_bootstrap(tmp_path):
    rendered = tmp_path / "r.yaml"
    rendered.write_text(chart.render({}))
    out = tmp_path / "envoy.yaml"
    args = ["envoy", str(rendered), "--gateway-listen", GW, "--mesh-listen", MESH, "-o", str(out)]
    args += [a for k, v in EP.items() for a in ("--endpoint", f"{k}={v}")]
    assert translate.main(args) == 0
    assert yaml.safe_load(out.read_text())["static_resources"]["listeners"][0]["name"] == "gateway"
    assert translate.main(args[:-2 * len(EP)] ) == 2  # no endpoints: refused with a message


# --- refusals -------------------------------------------------------------------------------


def _app_vs(d):
    return vs(d, "sms-app-vs")


def _model_dr(d):
    return next(x for x in d if x["kind"] == "DestinationRule" and x["spec"]["host"] == MODEL)


REFUSED = [
    ("retries", lambda d: _app_vs(d)["spec"]["http"][0].update(retries={"attempts": 3}), "http[0].retries"),
    ("fault", lambda d: _app_vs(d)["spec"]["http"][6].update(fault={"abort": {}}), "http[6].fault"),
    ("uri match", lambda d: _app_vs(d)["spec"]["http"][2]["match"][0].update(uri={"prefix": "/x"}), "match[0].uri"),
    ("prefix header", lambda d: _app_vs(d)["spec"]["http"][2]["match"][0]["headers"].update(
        {"x-version": {"prefix": "v"}}), "headers.x-version.prefix"),
    ("request headers", lambda d: _app_vs(d)["spec"]["http"][6]["route"][0]["headers"].update(
        request={"set": {"a": "b"}}), "route[0].headers.request"),
    ("tcp routes", lambda d: _app_vs(d)["spec"].update(tcp=[{}]), "spec.tcp"),
    ("no subset", lambda d: _app_vs(d)["spec"]["http"][0]["route"][0]["destination"].pop("subset"), "subset is required"),
    ("unknown subset", lambda d: _app_vs(d)["spec"]["http"][0]["route"][0]["destination"].update(subset="v9"),
     "'v9' is not a subset"),
    ("round robin", lambda d: _model_dr(d)["spec"]["trafficPolicy"]["loadBalancer"].update(simple="ROUND_ROBIN"),
     "loadBalancer.simple 'ROUND_ROBIN'"),
    ("tls", lambda d: _model_dr(d)["spec"]["trafficPolicy"].update(tls={"mode": "ISTIO_MUTUAL"}), "trafficPolicy.tls"),
    ("outlier", lambda d: _model_dr(d)["spec"]["subsets"][0].update(trafficPolicy={}), "subsets[0].trafficPolicy"),
    ("unknown gateway", lambda d: _app_vs(d)["spec"].update(gateways=["elsewhere"]), "'elsewhere' is not a Gateway"),
    ("redirect", lambda d: _app_vs(d)["spec"]["http"][0].pop("route"), "http[0].route is missing"),
]


@pytest.mark.parametrize("what,mutate,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_unsupported_constructs_are_refused_by_name(what, mutate, message):
    d = copy.deepcopy(list(docs()))
    mutate(d)
    with pytest.raises(translate.Unsupported) as err:
        boot(docs_=d)
    assert message in str(err.value)


def test_a_routed_subset_without_address_is_refused():
    with pytest.raises(ValueError, match=f"no local address was given for it.*{APP}/v2"):
        boot(endpoints={k: v for k, v in EP.items() if k != f"{APP}/v2"})
    boot("istio.canary.enabled=false", endpoints={k: v for k, v in EP.items() if k != f"{APP}/v2"})


def test_bad_values_are_refused_by_helm_before_translation():
    with pytest.raises(chart.helm.HelmError, match="must add up to 100"):
        chart.render(chart.values_from(["istio.canary.weights.canary=20"]))


# --- the local launcher's plan (scripts/mesh.sh) ---------------------------------------------


def test_plan_starts_one_process_per_rendered_deployment(tmp_path):
    import plan

    procs = plan.plan(chart.render(chart.values_from(["modelService.shadow.enabled=true"])), tmp_path,
                      GW, MESH, ADMIN, 18080, 18090, 19464, ["*"])
    env = {name: e for name, _, _, _, e in procs}
    assert set(env) == {"sms-app-app", "sms-app-app-canary", "sms-app-model", "sms-app-model-shadow"}
    assert env["sms-app-app"]["CACHE_ENABLED"] == "false" and env["sms-app-app-canary"]["CACHE_ENABLED"] == "true"
    assert env["sms-app-app"]["MODEL_HOST"] == f"http://{MESH}"
    assert env["sms-app-model-shadow"]["METRICS_SOURCE"] == "shadow"
    assert env["sms-app-model-shadow"]["MODEL_VERSION"] == "v2"
    assert all(v.startswith("127.0.0.1:") for e in env.values() for k, v in e.items() if k.endswith("_ADDR"))
    b = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    addrs = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
             for c in b["static_resources"]["clusters"]}
    assert addrs[cluster(APP, "v2")] == {"address": "127.0.0.1", "port_value": int(env["sms-app-app-canary"]["HTTP_ADDR"].split(":")[1])}
    assert addrs[cluster(MODEL, "v2", 8081)]["port_value"] == int(env["sms-app-model-shadow"]["GRPC_ADDR"].split(":")[1])

    rolled = plan.plan(chart.render(chart.values_from(["istio.canary.enabled=false"])), tmp_path,
                       GW, MESH, ADMIN, 18080, 18090, 19464, ["*"])
    assert {p[0] for p in rolled} == {"sms-app-app", "sms-app-model"}
