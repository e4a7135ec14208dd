"""Translate the chart's rendered Istio routing into the Envoy configuration Istio would
generate for it, so the routing can run on one machine with a real Envoy.

Input: the rendered chart (multi-document YAML from the Helm engine). Output: an Envoy v3
bootstrap with static resources:

- the ingress-gateway side: an HTTP listener whose virtual hosts are the app
  VirtualService's hosts (`istio.hosts` plus `stable.`/`canary.` forms), with its routes
  in order (authority and header matches, weighted clusters, per-destination response
  headers such as the sticky cookie's Set-Cookie);
- the sidecar-outbound side: an HTTP/2 (gRPC) listener for the model VirtualService,
  routing to its subset and mirroring `mirrorPercentage` % of the calls to the mirror
  subset;
- one cluster per DestinationRule subset, named as Istio names them
  (`outbound|PORT|SUBSET|HOST.NAMESPACE.svc.cluster.local`), pointing at the local
  addresses the caller gives (what istiod would discover as pod endpoints).

Everything comes from the rendered objects: no weight, cookie, host or percentage is
written here. Only the constructs the chart uses are understood; anything else raises
`Unsupported` naming the field, instead of being silently dropped.

CLI:
  translate.py envoy RENDERED.yaml --endpoint HOST/SUBSET=127.0.0.1:PORT ... \
      --gateway-listen 127.0.0.1:8000 --mesh-listen 127.0.0.1:18081 \
      [--admin 127.0.0.1:9901] [--local-domains '*'] -o envoy.yaml
  translate.py workloads RENDERED.yaml      # JSON: the Deployments, their subsets and env
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable

import yaml

ISTIO_KINDS = ("VirtualService", "DestinationRule", "Gateway")

# Istio's default route retry policy (networking/core/route/retry): applied to every
# HTTP route that sets no `retries`.
ISTIO_DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 5,
    "retriable_status_codes": [503],
}

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class Unsupported(ValueError):
    """The rendered chart uses a construct this translator does not model."""


# --- reading the rendered chart ---------------------------------------------------------


def load_docs(text: str) -> list[dict]:
    """Every object of a multi-document YAML stream (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]


def _only(obj: dict, allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise Unsupported(f"{where}.{extra[0]} is not supported by the local translator")


def _name(doc: dict) -> str:
    return f"{doc['kind']} {doc.get('metadata', {}).get('name', '?')}"


class Mesh:
    """The Istio objects of one render, checked for unsupported constructs."""

    def __init__(self, docs: list[dict]):
        self.gateways = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Gateway"}
        self.vss = [d for d in docs if d["kind"] == "VirtualService"]
        self.drs = {}
        for d in docs:
            if d["kind"] == "DestinationRule":
                self.drs[d["spec"]["host"]] = d
        ingress = [v for v in self.vss if v["spec"].get("gateways")]
        mesh = [v for v in self.vss if not v["spec"].get("gateways")]
        if len(ingress) != 1:
            raise Unsupported(f"expected one VirtualService bound to a Gateway, found {len(ingress)}")
        if len(mesh) != 1:
            raise Unsupported(f"expected one mesh (sidecar) VirtualService, found {len(mesh)}")
        self.app_vs, self.model_vs = ingress[0], mesh[0]
        for vs in self.vss:
            self._check_vs(vs)
        for dr in self.drs.values():
            self._check_dr(dr)

    # -- validation: only what the chart uses --------------------------------------------
    def _check_vs(self, vs: dict) -> None:
        where = _name(vs)
        _only(vs, ("apiVersion", "kind", "metadata", "spec"), where)
        spec = vs["spec"]
        _only(spec, ("hosts", "gateways", "http"), f"{where} spec")
        for gw in spec.get("gateways", []):
            if gw not in self.gateways:
                raise Unsupported(f"{where} spec.gateways: {gw!r} is not a Gateway of this render")
        if not spec.get("http"):
            raise Unsupported(f"{where} spec.http is empty")
        for i, route in enumerate(spec["http"]):
            w = f"{where} spec.http[{i}]"
            _only(route, ("name", "match", "route", "mirror", "mirrorPercentage"), w)
            for j, m in enumerate(route.get("match") or []):
                _only(m, ("authority", "headers"), f"{w}.match[{j}]")
                if "authority" in m:
                    _only(m["authority"], ("regex", "exact"), f"{w}.match[{j}].authority")
                for h, rule in (m.get("headers") or {}).items():
                    _only(rule, ("regex", "exact"), f"{w}.match[{j}].headers.{h}")
            if not route.get("route"):
                raise Unsupported(f"{w}.route is missing (redirect/direct responses are not supported)")
            for j, dst in enumerate(route["route"]):
                _only(dst, ("destination", "weight", "headers"), f"{w}.route[{j}]")
                self._check_destination(dst["destination"], f"{w}.route[{j}].destination")
                if "headers" in dst:
                    _only(dst["headers"], ("response",), f"{w}.route[{j}].headers")
                    _only(dst["headers"]["response"], ("add",), f"{w}.route[{j}].headers.response")
            if "mirror" in route:
                self._check_destination(route["mirror"], f"{w}.mirror")
            if "mirrorPercentage" in route:
                if "mirror" not in route:
                    raise Unsupported(f"{w}.mirrorPercentage without mirror")
                _only(route["mirrorPercentage"], ("value",), f"{w}.mirrorPercentage")

    def _check_destination(self, dst: dict, where: str) -> None:
        _only(dst, ("host", "subset", "port"), where)
        if "subset" not in dst:
            raise Unsupported(f"{where}.subset is required (the local endpoints are per subset)")
        if "port" in dst:
            _only(dst["port"], ("number",), f"{where}.port")
        dr = self.drs.get(dst["host"])
        if dr is None:
            raise Unsupported(f"{where}.host {dst['host']!r} has no DestinationRule in this render")
        if dst["subset"] not in [s["name"] for s in dr["spec"]["subsets"]]:
            raise Unsupported(f"{where}.subset {dst['subset']!r} is not a subset of {_name(dr)}")

    def _check_dr(self, dr: dict) -> None:
        where = _name(dr)
        _only(dr, ("apiVersion", "kind", "metadata", "spec"), where)
        spec = dr["spec"]
        _only(spec, ("host", "trafficPolicy", "subsets"), f"{where} spec")
        for i, s in enumerate(spec.get("subsets", [])):
            _only(s, ("name", "labels"), f"{where} spec.subsets[{i}]")
        self.lb_policy(dr)  # raises on anything unsupported

    @staticmethod
    def lb_policy(dr: dict) -> tuple[str, dict | None]:
        """(Envoy lb_policy, consistentHash.httpCookie or None) of a DestinationRule."""
        where = f"{_name(dr)} spec.trafficPolicy"
        tp = dr["spec"].get("trafficPolicy")
        if not tp:
            return "LEAST_REQUEST", None  # Istio's default since 1.14
        _only(tp, ("loadBalancer",), where)
        lb = tp["loadBalancer"]
        _only(lb, ("simple", "consistentHash"), f"{where}.loadBalancer")
        if "simple" in lb:
            if lb["simple"] != "LEAST_REQUEST":
                raise Unsupported(f"{where}.loadBalancer.simple {lb['simple']!r} (only LEAST_REQUEST)")
            return "LEAST_REQUEST", None
        ch = lb["consistentHash"]
        _only(ch, ("httpCookie",), f"{where}.loadBalancer.consistentHash")
        _only(ch["httpCookie"], ("name", "path", "ttl"), f"{where}.loadBalancer.consistentHash.httpCookie")
        return "RING_HASH", ch["httpCookie"]

    # -- helpers ---------------------------------------------------------------------
    def fqdn(self, host: str, namespace: str) -> str:
        return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


def _ns(doc: dict) -> str:
    return doc.get("metadata", {}).get("namespace") or "default"


def _string_match(rule: dict) -> dict:
    if "exact" in rule:
        return {"exact": str(rule["exact"])}
    return {"safe_regex": {"regex": str(rule["regex"])}}


def _duration(value: Any) -> str:
    text = str(value)
    for unit, mult in (("h", 3600), ("m", 60), ("s", 1)):
        if text.endswith(unit) and text[:-1].isdigit():
            return f"{int(text[:-1]) * mult}s"
    if text.isdigit():
        return f"{text}s"
    raise Unsupported(f"duration {text!r} (use seconds, s, m or h)")


class Translator:
    def __init__(self, mesh: Mesh, endpoints: dict[str, str]):
        self.mesh = mesh
        self.endpoints = dict(endpoints)
        self.clusters: dict[str, dict] = {}
        self.used: set[str] = set()

    def cluster_name(self, dst: dict, vs: dict, default_port: int | None) -> str:
        port = dst.get("port", {}).get("number", default_port)
        if port is None:
            raise Unsupported(f"{_name(vs)}: destination {dst['host']}/{dst['subset']} has no port.number")
        key = f"{dst['host']}/{dst['subset']}"
        name = f"outbound|{port}|{dst['subset']}|{self.mesh.fqdn(dst['host'], _ns(vs))}"
        if key not in self.endpoints:
            raise ValueError(
                f"{_name(vs)} sends traffic to subset {key} but no local address was given for it "
                f"(pass --endpoint {key}=127.0.0.1:PORT)"
            )
        self.used.add(key)
        self.clusters.setdefault(name, {"key": key, "host": dst["host"], "subset": dst["subset"]})
        return name

    # -- routes --------------------------------------------------------------------------
    def route_action(self, route: dict, vs: dict, default_port: int | None) -> tuple[dict, list]:
        dests = route["route"]
        action: dict = {"timeout": "0s", "retry_policy": ISTIO_DEFAULT_RETRY,
                        "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}}
        route_headers: list = []
        weighted = [d for d in dests if len(dests) == 1 or int(d.get("weight", 0)) > 0]
        if len(dests) == 1:
            d = dests[0]
            action["cluster"] = self.cluster_name(d["destination"], vs, default_port)
            route_headers = self.response_headers(d)
        else:
            if not weighted:
                raise Unsupported(f"{_name(vs)} route {route.get('name')!r}: every weight is 0")
            action["weighted_clusters"] = {
                "clusters": [
                    {
                        "name": self.cluster_name(d["destination"], vs, default_port),
                        "weight": int(d["weight"]),
                        **({"response_headers_to_add": h} if (h := self.response_headers(d)) else {}),
                    }
                    for d in weighted
                ]
            }
        # consistent hash inside the subset (DestinationRule trafficPolicy), as a route hash policy
        cookies = {json.dumps(self.mesh.lb_policy(self.mesh.drs[d["destination"]["host"]])[1], sort_keys=True)
                   for d in weighted}
        if len(cookies) > 1:
            raise Unsupported(f"{_name(vs)} route {route.get('name')!r}: destinations with different consistentHash")
        cookie = json.loads(cookies.pop()) if cookies else None
        if cookie:
            c = {"name": cookie["name"]}
            if "path" in cookie:
                c["path"] = cookie["path"]
            if "ttl" in cookie:
                c["ttl"] = _duration(cookie["ttl"])
            action["hash_policy"] = [{"cookie": c}]
        if "mirror" in route:
            mirror = self.cluster_name(route["mirror"], vs, default_port)
            policy: dict = {"cluster": mirror}
            pct = route.get("mirrorPercentage", {}).get("value", 100)
            pct = float(pct)
            if not 0 <= pct <= 100:
                raise Unsupported(f"{_name(vs)} mirrorPercentage.value {pct} out of 0..100")
            # Istio: numerator = value * 10,000 over a MILLION denominator
            policy["runtime_fraction"] = {
                "default_value": {"numerator": int(round(pct * 10_000)), "denominator": "MILLION"}
            }
            action["request_mirror_policies"] = [policy]
        return action, route_headers

    @staticmethod
    def response_headers(dst: dict) -> list:
        add = dst.get("headers", {}).get("response", {}).get("add", {}) or {}
        return [
            {"header": {"key": k, "value": str(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            for k, v in add.items()
        ]

    def routes(self, vs: dict, default_port: int | None = None) -> list[dict]:
        out = []
        for i, r in enumerate(vs["spec"]["http"]):
            name = r.get("name", f"route-{i}")
            action, headers = self.route_action(r, vs, default_port)
            blocks = r.get("match") or [{}]
            for m in blocks:
                match: dict = {"prefix": "/"}
                hm = []
                if "authority" in m:
                    hm.append({"name": ":authority", "string_match": _string_match(m["authority"])})
                for h, rule in (m.get("headers") or {}).items():
                    hm.append({"name": h.lower(), "string_match": _string_match(rule)})
                if hm:
                    match["headers"] = hm
                route = {"name": name, "match": match, "route": action}
                if headers:
                    route["response_headers_to_add"] = headers
                out.append(route)
        return out

    # -- listeners -------------------------------------------------------------------------
    @staticmethod
    def hcm(stat: str, route_config: dict, http2: bool) -> dict:
        cfg = {
            "@type": HCM_TYPE,
            "stat_prefix": stat,
            "codec_type": "AUTO",
            "route_config": route_config,
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        }
        if http2:
            cfg["http2_protocol_options"] = {}
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}

    @staticmethod
    def listener(name: str, addr: str, hcm: dict) -> dict:
        host, port = split_addr(addr)
        return {
            "name": name,
            "address": {"socket_address": {"address": host, "port_value": port}},
            "filter_chains": [{"filters": [hcm]}],
        }

    def gateway_listener(self, listen: str, local_domains: list[str]) -> dict:
        vs = self.mesh.app_vs
        routes = self.routes(vs)
        gw = self.mesh.gateways[vs["spec"]["gateways"][0]]
        gw_hosts = {h for s in gw["spec"].get("servers", []) for h in s.get("hosts", [])}
        vhosts = []
        for h in vs["spec"]["hosts"]:
            if gw_hosts and h not in gw_hosts and "*" not in gw_hosts:
                raise Unsupported(f"{_name(vs)} host {h!r} is not served by {_name(gw)}")
            # Istio's gateway virtual hosts: the host, and the host with any port
            vhosts.append({"name": f"{h}:{gw['spec']['servers'][0]['port']['number']}",
                           "domains": [h, f"{h}:*"], "routes": routes})
        if local_domains:
            vhosts.append({"name": "local", "domains": list(local_domains), "routes": routes})
        rc = {"name": f"http.{split_addr(listen)[1]}", "virtual_hosts": vhosts, "validate_clusters": True}
        return self.listener("gateway", listen, self.hcm("gateway", rc, http2=False))

    def mesh_listener(self, listen: str) -> dict:
        vs = self.mesh.model_vs
        # the model's port, for destinations that omit it: the one its routes name
        routes = self.routes(vs)
        host, port = split_addr(listen)
        domains = []
        for h in vs["spec"]["hosts"]:
            f = self.mesh.fqdn(h, _ns(vs))
            domains += [h, f"{h}:*", f, f"{f}:*"]
        # the listener address plays the Service's ClusterIP:port
        domains.append(f"{host}:{port}")
        rc = {"name": "mesh", "virtual_hosts": [{"name": vs["spec"]["hosts"][0], "domains": domains,
                                                 "routes": routes}], "validate_clusters": True}
        return self.listener("mesh-outbound", listen, self.hcm("mesh", rc, http2=True))

    # -- clusters ------------------------------------------------------------------------------
    def build_clusters(self) -> list[dict]:
        grpc_hosts = {d["destination"]["host"] for r in self.mesh.model_vs["spec"]["http"] for d in r["route"]}
        out = []
        for name, c in sorted(self.clusters.items()):
            dr = self.mesh.drs[c["host"]]
            lb, _ = self.mesh.lb_policy(dr)
            host, port = split_addr(self.endpoints[c["key"]])
            cluster = {
                "name": name,
                "type": "STATIC",
                "connect_timeout": "10s",  # Istio's default connectTimeout
                "lb_policy": lb,
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": host, "port_value": port}}}}]}],
                },
            }
            if c["host"] in grpc_hosts:
                cluster["typed_extension_protocol_options"] = {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": HTTP_OPTIONS_TYPE,
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                }
            out.append(cluster)
        return out


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host, int(port)


def translate(
    docs: list[dict],
    endpoints: dict[str, str],
    gateway_listen: str,
    mesh_listen: str,
    admin: str | None = None,
    local_domains: Iterable[str] = (),
) -> dict:
    """The Envoy bootstrap for the rendered objects `docs`. `endpoints` maps
    `HOST/SUBSET` (DestinationRule host and subset name) to a local `127.0.0.1:PORT`."""
    mesh = Mesh([d for d in docs if d["kind"] in ISTIO_KINDS])
    t = Translator(mesh, endpoints)
    listeners = [t.gateway_listener(gateway_listen, list(local_domains)), t.mesh_listener(mesh_listen)]
    boot: dict = {
        "node": {"id": "local-mesh", "cluster": "local-mesh"},
        "static_resources": {"listeners": listeners, "clusters": t.build_clusters()},
        # mirrored/weighted choices use runtime fractions: give them a runtime layer
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
    }
    if admin:
        host, port = split_addr(admin)
        boot["admin"] = {"address": {"socket_address": {"address": host, "port_value": port}}}
    return boot


def workloads(docs: list[dict]) -> list[dict]:
    """The rendered Deployments, each with the `HOST/SUBSET` keys it backs (the Service
    selector and subset labels matched against its pod labels, as istiod discovers
    endpoints) and its container environment (ConfigMap `envFrom` resolved)."""
    services = [d for d in docs if d["kind"] == "Service" and d["spec"].get("selector")]
    drs = [d for d in docs if d["kind"] == "DestinationRule"]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    out = []
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        keys = []
        for dr in drs:
            svc = next((s for s in services if s["metadata"]["name"] == dr["spec"]["host"]), None)
            if svc is None or not _selects(svc["spec"]["selector"], labels):
                continue
            for s in dr["spec"].get("subsets", []):
                if _selects(s.get("labels", {}), labels):
                    keys.append(f"{dr['spec']['host']}/{s['name']}")
        (container,) = dep["spec"]["template"]["spec"]["containers"][:1]
        env = {}
        for src in container.get("envFrom", []):  # ConfigMaps first, `env` wins
            name = src.get("configMapRef", {}).get("name")
            cm = next((c for c in configmaps if c["metadata"]["name"] == name), None)
            env.update({k: str(v) for k, v in ((cm or {}).get("data") or {}).items()})
        env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
        out.append({"name": dep["metadata"]["name"], "labels": labels, "subsets": keys, "env": env})
    return out


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # the same routes in every virtual host: spell them out
        return True


def dump(boot: dict) -> str:
    """The bootstrap as YAML, without anchors/aliases (easier to read and diff)."""
    return yaml.dump(boot, Dumper=_NoAliases, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("envoy", help="write the Envoy bootstrap")
    e.add_argument("rendered")
    e.add_argument("--endpoint", action="append", default=[], metavar="HOST/SUBSET=ADDR")
    e.add_argument("--gateway-listen", required=True)
    e.add_argument("--mesh-listen", required=True)
    e.add_argument("--admin")
    e.add_argument("--local-domains", action="append", default=[])
    e.add_argument("-o", "--output", default="-")
    w = sub.add_parser("workloads", help="JSON list of the rendered Deployments with their subsets and env")
    w.add_argument("rendered")
    a = p.parse_args(argv)
    with open(a.rendered) as f:
        docs = load_docs(f.read())
    if a.cmd == "workloads":
        json.dump(workloads(docs), sys.stdout, indent=1)
        print()
        return 0
    endpoints = {}
    for spec in a.endpoint:
        key, sep, addr = spec.partition("=")
        if not sep:
            p.error(f"--endpoint {spec!r}: expected HOST/SUBSET=ADDR")
        endpoints[key] = addr
    try:
        boot = translate(docs, endpoints, a.gateway_listen, a.mesh_listen, a.admin, a.local_domains)
    except (Unsupported, ValueError) as err:
        print(f"translate: {err}", file=sys.stderr)
        return 2
    text = dump(boot)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        with open(a.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
