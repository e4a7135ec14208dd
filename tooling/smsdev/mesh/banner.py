"""What `make mesh` tells its user: the banner once the experiment serves (what runs, its
addresses, how to change it, how to judge it) and, when it stops, a summary per version
from the processes' own metrics pages."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from smsdev.mesh.plan import LOCAL_DEFAULTS
from smsdev.promtext import samples

if TYPE_CHECKING:
    from smsdev.mesh.supervisor import LocalMesh


def banner(mesh: LocalMesh) -> str:
    """What runs and where: printed once the experiment serves."""
    p = mesh.ports
    u = f"http://sms.localhost:{p.gateway}"
    rows = "\n".join(f"    {w.name:<24} pid {w.proc.pid:<8} {w.main_url:<30} metrics {w.metrics_url}"
                     for w in mesh.workloads.values())
    return f"""
  The experiment is running (Ctrl-C stops it). Values: {' '.join(LOCAL_DEFAULTS + mesh.args)}

  Open  {u}/sms/   (Envoy, the ingress gateway programmed by Istio from the chart's
                                Gateway and VirtualService: the canary split, the sticky cookie)
  Force a version:  {u.replace('sms.localhost', 'canary.sms.localhost')}/sms/   or   -H 'x-version: v2'
  Change the values live (like helm upgrade; no restart, no failed request):
    scripts/mesh.sh upgrade --set istio.canary.weights.stable=80 --set istio.canary.weights.canary=20
  Processes (one per rendered Deployment):
{rows}
    istio-xds                pid {mesh.infra['istio-xds'].pid:<8} ADS 127.0.0.1:{p.xds}  debug http://127.0.0.1:{p.istiod}/debug/configz
    envoy-gateway            pid {mesh.infra['envoy-gateway'].pid:<8} {u}  admin http://127.0.0.1:{p.gateway_admin}/config_dump
    envoy-sidecar            pid {mesh.infra['envoy-sidecar'].pid:<8} the apps' way to the model: {p.vip}  admin http://127.0.0.1:{p.sidecar_admin}/config_dump
{prometheus_banner(mesh)}  Files: {mesh.run}/ (rendered.yaml, istio.yaml: what Istio was given; logs)
"""


def prometheus_banner(mesh: LocalMesh) -> str:
    """The banner's lines about the mesh's Prometheus (none without one)."""
    if not mesh.prometheus:
        return ""
    jobs = sorted({t["job"] for t in mesh.scrape_targets() + mesh.gateway_targets()})
    rules = (mesh.run / "prometheus" / "rules.yml").exists()
    ns = next((d["metadata"]["namespace"] for d in mesh.docs if d["kind"] == "Deployment"), "sms-app")
    return f"""    prometheus               pid {mesh.prometheus.pid:<8} {mesh.prometheus_url}  scrapes every process each {mesh.scrape_interval} as the chart's
                                          Service/PodMonitors do (jobs {', '.join(jobs) or 'none: monitoring.enabled=false'}){'; the chart' + "'" + 's rules' if rules else ''}
  Traffic: labelled messages from the data set's test split, as visitors with their cookies and guesses:
    make mesh-traffic ARGS='--duration 60 --concurrency 8'
  The verdict of both experiments from this Prometheus (docs/experiment.md; no 24 h minimum duration locally):
    make experiment ARGS='--prometheus {mesh.prometheus_url} --namespace {ns} --window 15m --min-samples 1000 --min-duration 0'
"""


def summary(mesh: LocalMesh) -> str:
    """Per version, from the running processes' metrics pages (their counters since they
    started): the apps' requests, 5xx, classifications, guess agreement and cache hits;
    the models' calls, failed calls, guess agreement and the shadow's agreement with the
    serving model."""
    lines = ["", "  Summary (the processes' counters since they started):"]
    pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "-"  # noqa: E731
    for w in mesh.workloads.values():
        if not w.proc or not w.proc.alive():
            lines.append(f"    {w.name:<24} not running")
            continue
        try:
            with urllib.request.urlopen(w.metrics_url, timeout=2) as r:
                rows = list(samples(r.read().decode()))
        except (OSError, urllib.error.URLError) as e:
            lines.append(f"    {w.name:<24} metrics unreadable ({e})")
            continue

        def total(name, keep=lambda labels: True):
            return sum(v for n, labels, v in rows if n == name and keep(labels))
        version = next((lb.get("version") for n, lb, _ in rows if lb.get("version")), "?")
        if w.binary == "app-service":
            user = lambda lb: lb.get("route") not in ("/metrics", "/livez", "/readyz")  # noqa: E731
            req = total("sms_requests_total", user)
            err = total("sms_requests_total", lambda lb: user(lb) and lb.get("status", "").startswith("5"))
            guesses = total("sms_guesses_total")
            hits, misses = total("sms_cache_hits_total"), total("sms_cache_misses_total")
            lines.append(
                f"    app {version} ({w.name}): {req:,.0f} requests, {err:,.0f} answered 5xx ({pct(err, req)}); "
                f"{total('sms_messages_classified_total'):,.0f} classified; guess agreement "
                f"{pct(total('sms_guesses_total', lambda lb: lb.get('agreement') == 'agree'), guesses)} of "
                f"{guesses:,.0f}; {total('sms_model_calls_total'):,.0f} model calls"
                + (f"; cache hits {pct(hits, hits + misses)}" if hits + misses else ""))
        else:
            source = next((lb.get("source") for n, lb, _ in rows if lb.get("source")), "?")
            calls = total("sms_model_requests_total")
            failed = total("sms_model_requests_total", lambda lb: lb.get("code") not in ("Ok", "InvalidArgument", "Cancelled"))
            guesses = total("sms_model_guesses_total")
            line = (f"    model {version} ({source}, {w.name}): {calls:,.0f} calls, {failed:,.0f} failed on the server "
                    f"({pct(failed, calls)}); guess agreement "
                    f"{pct(total('sms_model_guesses_total', lambda lb: lb.get('agreement') == 'agree'), guesses)} of {guesses:,.0f}")
            compared = total("sms_shadow_comparisons_total")
            if any(n == "sms_shadow_comparisons_total" for n, _, _ in rows):
                ref = next((lb.get("reference_version") for n, lb, _ in rows if lb.get("reference_version")), "?")
                line += (f"; agreement with serving model {ref}: "
                         f"{pct(total('sms_shadow_comparisons_total', lambda lb: lb.get('outcome') == 'agree'), compared)}"
                         f" of {compared:,.0f} mirrored calls")
            lines.append(line)
    return "\n".join(lines) + "\n"
