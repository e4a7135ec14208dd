"""The local overlay: what a cluster would give Istio and one machine does not, added to the
rendered chart so that Istio's own config generator (istio/local/xds, see docs/mesh.md)
can program real Envoys on 127.0.0.1. It writes no routing: every VirtualService and
DestinationRule is the chart's, passed through untouched.

What it adds or changes, and why:

- one ServiceEntry per rendered (non-headless) Service, same host and ports, whose
  endpoints are the local processes of the Deployments the Service selects, with their pod
  labels (so the DestinationRules' subsets select them as they select pods). What
  Kubernetes' endpoint discovery gives istiod in a cluster. Endpoints carry no
  `security.istio.io/tlsMode` label: the local processes speak plaintext, as pods without
  a sidecar do (auto mTLS is also off in the local mesh config, istio/local/xds).
- the Services the workloads call (a host named in a Deployment's environment, e.g.
  MODEL_HOST) get a loopback address, the local stand-in for a ClusterIP, and a namespace
  Sidecar binds the callers' outbound listener there (capture mode NONE: no iptables).
- the ingress gateway's Service (`istio-ingressgateway` in istio-system, as an Istio
  install creates it): each Gateway port maps to the local gateway port, like the
  install's 80 -> 8080; and the chart's Gateway servers bind 127.0.0.1 instead of 0.0.0.0.

Used by the mesh's supervisor (smsdev.mesh.plan), which writes the result to istio.yaml for
istio-xds.
"""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import yaml

GATEWAY_NS = "istio-system"
GATEWAY_SVC = "istio-ingressgateway"
DOMAIN = "svc.cluster.local"


def load_docs(text: str) -> list[dict]:
    """Every object of a multi-document YAML stream (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def workloads(docs: list[dict]) -> list[dict]:
    """The rendered Deployments: name, pod labels, container ports by name, environment
    (ConfigMap `envFrom` resolved, `env` winning)."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    out = []
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = dep["spec"]["template"]
        (container,) = pod["spec"]["containers"][:1]
        env = {}
        for src in container.get("envFrom", []):
            cm = configmaps.get(src.get("configMapRef", {}).get("name"), {})
            env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
        env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
        out.append({
            "name": dep["metadata"]["name"], "namespace": dep["metadata"].get("namespace", "default"),
            "labels": pod["metadata"].get("labels", {}),
            "ports": {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p},
            "env": env,
        })
    return out


def protocol(port: dict) -> str:
    """Istio's protocol selection for a Service port: appProtocol, else the name's prefix."""
    name = (port.get("appProtocol") or port.get("name") or "").lower()
    for proto in ("grpc-web", "grpc", "http2", "https", "http", "tls", "tcp", "mongo", "redis", "mysql"):
        if name == proto or name.startswith(proto + "-"):
            return {"grpc-web": "GRPC-Web", "http2": "HTTP2"}.get(proto, proto.upper())
    return "TCP"


def called_hosts(docs: list[dict]) -> set[str]:
    """Service names the workloads call by URL in their environment (e.g. MODEL_HOST)."""
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    out = set()
    for w in workloads(docs):
        for v in w["env"].values():
            if "://" in v:
                host = (urlsplit(v).hostname or "").split(".")[0]
                if host in names:
                    out.add(host)
    return out


def overlay(docs: list[dict], listen: dict[str, dict[str, int]], gateway_port: int,
            vip: str, bind: str = "127.0.0.1") -> list[dict]:
    """The Istio objects for Istio's generator: the chart's, plus the local endpoints.
    `listen`: Deployment name -> {container port name: local port} of the running
    processes (a Deployment without a process has no endpoints, as with 0 ready pods)."""
    out = []
    called = called_hosts(docs)
    gateway_ports = []
    for d in docs:
        api = d.get("apiVersion", "")
        if "istio.io" not in api:
            continue
        d = copy.deepcopy(d)
        if d["kind"] == "Gateway":
            for s in d["spec"]["servers"]:
                s["bind"] = bind  # 127.0.0.1, not every interface
                gateway_ports.append(s["port"])
        out.append(d)
    deployments = workloads(docs)
    for svc in (d for d in docs if d["kind"] == "Service"):
        spec, meta = svc["spec"], svc["metadata"]
        if spec.get("clusterIP") == "None" or not spec.get("selector"):
            continue  # headless: the clients balance themselves (istio.enabled=false only)
        ns = meta.get("namespace", "default")
        endpoints = []
        for w in deployments:
            if w["namespace"] != ns or not selects(spec["selector"], w["labels"]) or w["name"] not in listen:
                continue
            ports = {}
            for p in spec["ports"]:
                target = p.get("targetPort", p["port"])
                cport = target if isinstance(target, str) else next(
                    (n for n, v in w["ports"].items() if v == target), None)
                if cport in listen[w["name"]]:
                    ports[p["name"]] = listen[w["name"]][cport]
            endpoints.append({"address": "127.0.0.1", "ports": ports, "labels": dict(w["labels"])})
        se = {
            "hosts": [f"{meta['name']}.{ns}.{DOMAIN}"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": p["port"], "name": p["name"], "protocol": protocol(p)} for p in spec["ports"]],
            "endpoints": endpoints,
        }
        if meta["name"] in called:
            se["addresses"] = [vip]
        out.append(_obj("ServiceEntry", f"local-{meta['name']}", ns, se))
    if called:
        namespaces = sorted({d["metadata"].get("namespace", "default") for d in docs if d["kind"] == "Service"
                             and d["metadata"]["name"] in called})
        for ns in namespaces:
            hosts = [f"./{h}.{ns}.{DOMAIN}" for h in sorted(called)]
            out.append(_obj("Sidecar", "local-outbound", ns, {"egress": [{"bind": vip, "hosts": hosts}]}))
    if gateway_ports:
        selector = next(d for d in docs if d["kind"] == "Gateway")["spec"]["selector"]
        out.append(_obj("ServiceEntry", f"local-{GATEWAY_SVC}", GATEWAY_NS, {
            "hosts": [f"{GATEWAY_SVC}.{GATEWAY_NS}.{DOMAIN}"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": p["number"], "name": p["name"], "protocol": p["protocol"], "targetPort": gateway_port}
                      for p in gateway_ports],
            "endpoints": [{"address": bind, "labels": dict(selector)}],
        }))
    return out


def _obj(kind: str, name: str, ns: str, spec: dict) -> dict:
    api = "networking.istio.io/v1"
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": ns, "labels": {"sms-app/local-overlay": "true"}},
            "spec": spec}


def dump(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)

