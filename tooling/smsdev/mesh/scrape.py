"""What the mesh's Prometheus scrapes and evaluates, derived from the render as the
Prometheus operator derives it on a cluster: the ServiceMonitors' targets among the local
processes, the gateway's PodMonitor translated for plain Envoy, and the PrometheusRules'
groups as a rule file (smsdev.prometheus writes the configuration). See docs/mesh.md."""

from __future__ import annotations

from pathlib import Path

from smsdev import prometheus
from smsdev.mesh import overlay
from smsdev.mesh.plan import Workload
from smsdev.procs import Proc


def scrape_targets(docs: list[dict], workloads: dict[str, Workload]) -> list[dict]:
    """What the Prometheus operator makes of the rendered ServiceMonitors: each selects
    Services by label; each endpoint (a Service port by name) of each Service is scraped
    on every running process of the Deployments the Service selects, labelled as the
    operator labels it: job and service = the Service's name, namespace, endpoint = the
    port's name, pod = the Deployment's name and the process id (a new process is a new
    pod). The services add version (and source) themselves."""
    services = [d for d in docs if d["kind"] == "Service"]
    deployments = overlay.workloads(docs)
    out = []
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        spec = sm["spec"]
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [sm["metadata"].get("namespace")]
        for svc in services:
            meta = svc["metadata"]
            if (meta.get("namespace") not in namespaces or not svc["spec"].get("selector")
                    or not overlay.selects((spec.get("selector") or {}).get("matchLabels") or {}, meta.get("labels") or {})):
                continue
            for ep in spec.get("endpoints", []):
                port = next((p for p in svc["spec"].get("ports", []) if p.get("name") == ep.get("port")), None)
                if port is None:
                    continue
                target = port.get("targetPort", port["port"])
                for dep in deployments:
                    w = workloads.get(dep["name"])
                    if (dep["namespace"] != meta.get("namespace") or not w or not w.proc
                            or not overlay.selects(svc["spec"]["selector"], dep["labels"])):
                        continue
                    cport = target if isinstance(target, str) else next(
                        (n for n, v in dep["ports"].items() if v == target), None)
                    if cport in w.listen:
                        out.append({"job": meta["name"], "namespace": meta["namespace"], "endpoint": ep["port"],
                                    "address": f"127.0.0.1:{w.listen[cport]}", "pod": f"{dep['name']}-{w.proc.pid}"})
    return out


def gateway_targets(docs: list[dict], gateway: Proc | None, admin_port: int) -> list[dict]:
    """What the Prometheus operator makes of the rendered PodMonitors that select the
    ingress gateway (namespace istio-system, the Gateway's selector labels): its Envoy's
    (`gateway`, admin on `admin_port`) `/stats/prometheus`, job `<namespace>/<name>` as the
    operator names a PodMonitor's, labelled with the gateway's namespace and pod. Without
    them the 503s the gateway answers for a dead canary are counted nowhere (no app sees
    them). The PodMonitor keeps only Istio's `istio_requests_total` of the release's app
    Service; the plain Envoys here have no Istio stats, so the same fact is kept as Envoy
    counts it: `envoy_cluster_upstream_rq_xx` of that Service's subset clusters
    (`outbound|<port>|<version>|<service>.<namespace>.svc.cluster.local`), a few
    series per version."""
    gw_obj = next((d for d in docs if d["kind"] == "Gateway"), None)
    if not gateway or not gw_obj:
        return []
    labels = gw_obj["spec"].get("selector") or {}
    out = []
    for pm in (d for d in docs if d["kind"] == "PodMonitor"):
        spec = pm["spec"]
        if (overlay.GATEWAY_NS not in ((spec.get("namespaceSelector") or {}).get("matchNames") or [])
                or not overlay.selects((spec.get("selector") or {}).get("matchLabels") or {}, labels)):
            continue
        for ep in spec.get("podMetricsEndpoints", []):
            keeps = [r for r in ep.get("metricRelabelings") or [] if r.get("action") == "keep"]
            istio = [r for r in keeps if r.get("sourceLabels") == ["__name__", "destination_service_namespace",
                                                                   "destination_service_name"]]
            envoy = [r for r in keeps if r.get("sourceLabels") == ["__name__", "envoy_cluster_name"]]
            if len(istio) == 1 and istio[0]["regex"].count(";") == 2:
                _, ns, svc = istio[0]["regex"].split(";")
                keep = rf"envoy_cluster_upstream_rq_xx;outbound\|[0-9]+\|[^|]+\|{svc}\.{ns}\.svc\.cluster\.local"
            elif len(envoy) == 1:  # monitoring.gateway.metric=envoy_cluster_upstream_rq_xx: as rendered
                keep = envoy[0]["regex"]
            else:
                raise RuntimeError(f"PodMonitor {pm['metadata']['name']}: no keep of istio_requests_total by "
                                   "destination_service_namespace and _name, nor of envoy_cluster_upstream_rq_xx "
                                   "by envoy_cluster_name, to translate for plain Envoy")
            out.append({"job": f"{pm['metadata']['namespace']}/{pm['metadata']['name']}",
                        "namespace": overlay.GATEWAY_NS, "endpoint": ep.get("port", ""),
                        "pod": f"{overlay.GATEWAY_SVC}-{gateway.pid}", "path": ep.get("path", "/metrics"),
                        "address": f"127.0.0.1:{admin_port}", "keep": keep})
    return out


def config(docs: list[dict], targets: list[dict], gateway: list[dict], interval: str, rules: Path) -> dict:
    """Scrape config for the running processes (`targets`) and the gateway (`gateway`), and
    the rendered PrometheusRules' groups written to `rules` (the chart's rules, under this
    release's names)."""
    groups = [g for d in docs if d["kind"] == "PrometheusRule" for g in (d["spec"].get("groups") or [])]
    if groups:
        prometheus.write_config(rules, {"groups": groups})
    cfg = prometheus.scrape_config(targets, interval, [rules] if groups else [])
    for t in gateway:
        cfg["scrape_configs"].append({
            "job_name": t["job"], "metrics_path": t["path"], "scheme": "http",
            "static_configs": [{"targets": [t["address"]], "labels": {
                "namespace": t["namespace"], "pod": t["pod"], "endpoint": t["endpoint"]}}],
            "metric_relabel_configs": [{"source_labels": ["__name__", "envoy_cluster_name"],
                                        "regex": t["keep"], "action": "keep"}]})
    return cfg
