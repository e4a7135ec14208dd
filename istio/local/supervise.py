"""The local experiment's supervisor (`make mesh`, scripts/mesh.sh): the chart rendered with
the real Helm engine, one process per rendered Deployment, Istio's own control plane
(istio-xds: the pilot config generator, no Kubernetes), two real Envoys it programs over
ADS (the ingress gateway and the apps' sidecar), and a real Prometheus scraping every
process as the chart's ServiceMonitors would, with the chart's rules, so that
`make experiment` reads the verdict from it. See docs/mesh.md.

  supervise.py run [--set K=V]... [-f values.yaml]...      start, print the banner, supervise
  supervise.py upgrade [--set K=V]... [-f values.yaml]...  re-render and push to the running one

`upgrade` works like `helm upgrade` without --reuse-values: the values given replace the
previous ones (the local mode's defaults still apply). New Deployments get their process
started and ready before the routes that reach them are pushed; Deployments that are gone
are stopped after the push of the routes that no longer reach them, and lose their
endpoints in a second push after that; one whose environment changed is replaced the same
way (start the new one, push, stop the old one): no request needs a process or an endpoint
that is not there.

One instance per run directory (a lock; a second one names the first and touches nothing).
A process that exits is logged by name; the experiment goes on (a shadow outage is
invisible to users). Istio's control plane exiting is logged too: the Envoys keep serving
their last configuration, as proxies do on a cluster, and this supervisor starts it again
with back-off (1 s, 2 s, 4 s ... 30 s), as Kubernetes restarts istiod; the Envoys reconnect
and get their configuration again. Only an Envoy exiting stops the experiment. Ctrl-C,
SIGTERM or SIGHUP (the terminal closed) prints a short summary per version (from the
processes' metrics pages), stops every process this supervisor started, by PID, and exits
0. Every process it starts dies with it even when it is killed (kill -9, the OOM killer:
Linux's parent-death signal), and the next start cleans up after such a run and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import bootstrap
import overlay
import render as chart

from smsdev import prometheus
from smsdev import stack as local  # the one description of the local stack
from smsdev.console import say
from smsdev.procs import Proc, http_ok
from smsdev.runstate import RunState
from smsdev.stack import samples

COMPONENT = "app.kubernetes.io/component"
# Set per process here, whatever the render says (cluster paths and addresses).
DROP = {"HTTP_ADDR", "MODEL_HOST", "GRPC_ADDR", "METRICS_ADDR", "INFERENCE_HTTP_ADDR", "MODEL_ROOT", "LOG_FORMAT"}
# The local mode's values (a --set given by the user wins): the shadow runs, and the
# Gateway also serves `sms.localhost` (Istio wants a dotted name; browsers resolve
# *.localhost to the loopback), so a browser reaches it at http://sms.localhost:PORT/
# (and the forced versions at canary.sms.localhost / stable.sms.localhost).
LOCAL_DEFAULTS = ["--set", "modelService.shadow.enabled=true",
                  "--set", "istio.hosts={sms-istio.local,sms.localhost}"]


def log(msg: str) -> None:
    say(f"==> {msg}")  # never fails: a closed terminal must not keep it from stopping


@dataclass
class Ports:
    gateway: int = 8000          # the ingress gateway (Envoy)
    gateway_admin: int = 15000   # its admin
    sidecar_admin: int = 15001   # the apps' sidecar (Envoy) admin
    xds: int = 15010             # istio-xds ADS (gRPC)
    istiod: int = 15014          # istio-xds control/debug (HTTP)
    control: int = 15080         # this supervisor's upgrade API (HTTP)
    app: int = 18080             # first app process port (+1 per app process)
    model: int = 18090           # first model gRPC port
    metrics: int = 19464         # first model metrics port
    prometheus: int = 9090       # Prometheus (make experiment's default address)
    vip: str = "127.0.0.2"       # the called Services' address (the sidecar's listener)

    @classmethod
    def from_env(cls) -> "Ports":
        p = cls()
        for k, env in (("gateway", "MESH_PORT"), ("gateway_admin", "MESH_ADMIN_PORT"),
                       ("sidecar_admin", "MESH_SIDECAR_ADMIN_PORT"), ("xds", "MESH_XDS_PORT"),
                       ("istiod", "MESH_ISTIOD_PORT"), ("control", "MESH_CONTROL_PORT"),
                       ("app", "MESH_APP_PORT"), ("model", "MESH_MODEL_PORT"),
                       ("metrics", "MESH_METRICS_PORT"), ("prometheus", "MESH_PROMETHEUS_PORT")):
            if os.environ.get(env):
                setattr(p, k, int(os.environ[env]))
        p.vip = os.environ.get("MESH_VIP", p.vip)
        return p


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nobody listens there. SO_REUSEADDR as the servers set it: connections of a run just
    stopped (TIME_WAIT) do not count, a listener does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def wait_for(check, seconds: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {seconds:.0f} s" + (f"; see {proc.log_path}" if proc else ""))


@dataclass
class Workload:
    """One rendered Deployment as a local process."""
    name: str
    binary: str             # app-service | model-service
    env: dict               # from the render, addresses set here
    listen: dict            # container port name -> local port
    main_url: str
    metrics_url: str
    ready_url: str
    proc: Proc | None = field(default=None, compare=False)


class LocalMesh:
    def __init__(self, run_dir: Path, ports: Ports, bindir: Path, istio_dir: Path, envoy_bin: str,
                 extra_env: dict | None = None, log_level: str = "warning", prometheus: bool = False,
                 scrape_interval: str = "2s", state: RunState | None = None):
        """`prometheus`: also run a Prometheus (tooling/smsdev/prometheus.py's) scraping the processes
        every `scrape_interval`, as the rendered ServiceMonitors say, with the rendered rules.
        `state`: where every process started is recorded while it runs (for the next start
        after a supervisor that could not stop them)."""
        self.state = state
        # istio-xds restarts: failures in a row (the back-off), when the next start is due,
        # since when the control plane is down, and when it last came up
        self.xds_failures, self.xds_restart_at, self.xds_down_since, self.xds_up_since = 0, None, None, 0.0
        self.run, self.ports, self.bindir = run_dir, ports, bindir
        self.istio_dir, self.envoy_bin = istio_dir, envoy_bin
        self.extra_env = extra_env or {}
        self.log_level = log_level
        self.workloads: dict[str, Workload] = {}
        self.infra: dict[str, Proc] = {}
        self.with_prometheus, self.scrape_interval = prometheus, scrape_interval
        self.prometheus: Proc | None = None
        self.args: list[str] = []
        self.docs: list[dict] = []
        self.generation = 0
        self.lock = threading.RLock()
        self.gone: set[str] = set()  # exits already reported

    # -- render and plan -------------------------------------------------------------
    def render(self, args: list[str]) -> tuple[str, list[dict]]:
        sets, files = [], []
        it = iter(LOCAL_DEFAULTS + list(args))
        for a in it:
            if a in ("--set",):
                sets.append(next(it))
            elif a in ("-f", "--values"):
                files.append(next(it))
            else:
                raise ValueError(f"unknown argument {a} (use --set KEY=VALUE or -f values.yaml)")
        text = chart.render(chart.values_from(sets, files))
        return text, overlay.load_docs(text)

    def _take(self, base: int, used: set[int]) -> int:
        p = base
        while p in used or not port_free(p):
            p += 1
            if p > base + 50:
                raise RuntimeError(f"no free port from {base}")
        used.add(p)
        return p

    def plan(self, docs: list[dict], keep: dict[str, Workload]) -> dict[str, Workload]:
        """A Workload per rendered Deployment; one identical to a running one keeps it."""
        called = overlay.called_hosts(docs)
        used = {p for w in self.workloads.values() for p in w.listen.values()}
        out = {}
        for w in overlay.workloads(docs):
            env = {k: v for k, v in w["env"].items() if k not in DROP}
            env.update(LOG_FORMAT="text", MODEL_ROOT=os.environ.get("MODEL_ROOT", str(chart.CHART.parent / "models")))
            env.update(self.extra_env)
            comp = w["labels"].get(COMPONENT)
            old = keep.get(w["name"])
            if comp == "app":
                model = urlsplit(w["env"].get("MODEL_HOST", ""))
                host = (model.hostname or "").split(".")[0]
                if host not in called:
                    raise RuntimeError(f"{w['name']}: MODEL_HOST {model.geturl()!r} names no rendered Service")
                env["MODEL_HOST"] = f"http://{self.ports.vip}:{model.port}"
                if old and old.env == {**env, "HTTP_ADDR": old.env["HTTP_ADDR"]}:
                    out[w["name"]] = old
                    continue
                port = self._take(self.ports.app, used)
                svc = local.app(w["name"], http=f"127.0.0.1:{port}", model_host=env.pop("MODEL_HOST"), **env)
                out[w["name"]] = Workload(w["name"], svc.binary, svc.env, {"http": port}, svc.addresses["ui"],
                                          svc.addresses["metrics"], svc.ready_url)
            elif comp == "model":
                # the addresses are this supervisor's (tooling/smsdev/stack.py's model() adds its own
                # Open Inference Protocol HTTP port): only the render's environment counts
                local_addrs = {k: old.env[k] for k in ("GRPC_ADDR", "METRICS_ADDR", "INFERENCE_HTTP_ADDR")
                               if old and k in old.env and k not in env}
                if old and old.env == {**env, **local_addrs}:
                    out[w["name"]] = old
                    continue
                grpc, metrics = self._take(self.ports.model, used), self._take(self.ports.metrics, used)
                http = self._take(self.ports.model, used)  # the Open Inference Protocol's HTTP port
                svc = local.model(w["name"], grpc=f"127.0.0.1:{grpc}", metrics=f"127.0.0.1:{metrics}",
                                  http=f"127.0.0.1:{http}", model_root=Path(env.pop("MODEL_ROOT")), **env)
                out[w["name"]] = Workload(w["name"], svc.binary, svc.env,
                                          {"grpc": grpc, "http-metrics": metrics, "http-inference": http},
                                          f"grpc://{svc.addresses['grpc']}", svc.addresses["metrics"], svc.ready_url)
            else:
                raise RuntimeError(f"Deployment {w['name']} has no {COMPONENT} app|model label")
        return out

    def write_config(self, text: str, docs: list[dict], workloads: dict[str, Workload]) -> Path:
        listen = {n: w.listen for n, w in workloads.items()}
        objs = overlay.overlay(docs, listen, self.ports.gateway, self.ports.vip)
        (self.run / "rendered.yaml").write_text(text)
        path = self.run / "istio.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(overlay.dump(objs))
        tmp.replace(path)
        return path

    # -- processes -------------------------------------------------------------------
    def spawn(self, name: str, cmd: list, env: dict | None = None) -> Proc:
        """A process of the experiment: in a session of its own (the terminal's signals reach
        only the supervisor, which stops everything in order), killed by the kernel if the
        supervisor dies without stopping it, recorded in the run state while it runs."""
        return Proc(name, cmd, self.run, env, append=True, new_session=True, die_with_parent=True, state=self.state)

    def start_workload(self, w: Workload) -> None:
        if w.proc and self.state:
            self.state.forget(w.proc)  # one that exited on its own, replaced
        w.proc = self.spawn(w.name, [self.bindir / w.binary], w.env)

    def wait_workload(self, w: Workload, seconds: float = 90) -> None:
        wait_for(lambda: http_ok(w.ready_url), seconds, w.name, w.proc)

    def start_xds(self, config: Path) -> Proc:
        """Istio's control plane, without waiting for it (it reads the configuration in force
        from `config`, which every upgrade rewrites before pushing it)."""
        p = self.ports
        old = self.infra.get("istio-xds")
        if old and self.state:
            self.state.forget(old)
        self.infra["istio-xds"] = self.spawn("istio-xds", [
            self.istio_dir / "istio-xds", "-xds", f"127.0.0.1:{p.xds}", "-control", f"127.0.0.1:{p.istiod}",
            "-config", config])
        return self.infra["istio-xds"]

    def xds_ready(self, timeout: float = 2) -> bool:
        return http_ok(f"http://127.0.0.1:{self.ports.istiod}/ready", timeout=timeout)

    def start_infra(self, config: Path) -> None:
        p = self.ports
        wait_for(self.xds_ready, 60, "istio-xds", self.start_xds(config))
        xds = f"127.0.0.1:{p.xds}"
        gw_sel = next(d for d in self.docs if d["kind"] == "Gateway")["spec"]["selector"]
        app_ns = next(d for d in self.docs if d["kind"] == "Deployment")["metadata"]["namespace"]
        proxies = {
            # the ingress gateway, as an Istio install runs it (istio-system, its selector labels)
            "envoy-gateway": bootstrap.bootstrap("router", "127.0.0.1", "istio-ingressgateway", overlay.GATEWAY_NS,
                                                 dict(gw_sel), xds, f"127.0.0.1:{p.gateway_admin}"),
            # the sidecar of the app pods (one for both versions: only their outbound matters)
            "envoy-sidecar": bootstrap.bootstrap("sidecar", p.vip, "sms-app-sidecar", app_ns,
                                                 {COMPONENT: "app"}, xds, f"127.0.0.1:{p.sidecar_admin}"),
        }
        for i, (name, boot) in enumerate(proxies.items()):
            cfg = self.run / f"{name}.json"
            cfg.write_text(bootstrap.dump(boot))
            self.infra[name] = self.spawn(name, [self.envoy_bin, "-c", cfg, "--disable-hot-restart",
                                                 "--base-id", str(p.gateway_admin * 2 + i), "-l", self.log_level,
                                                 "--concurrency", "2"])
        wait_for(self.proxies_synced, 60, "the Envoys' connection to istio-xds", self.infra["envoy-gateway"])
        for name, port in (("envoy-gateway", p.gateway_admin), ("envoy-sidecar", p.sidecar_admin)):
            # LIVE once its listeners (and their routes) from Istio are in place
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 60, f"{name}'s first configuration",
                     self.infra[name])

    def proxies_synced(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.istiod}/proxies", timeout=2) as r:
                return len(json.load(r)["proxies"] or []) == 2
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            return False

    def apply(self) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports.istiod}/apply", method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Istio refused the configuration: {e.read().decode(errors='replace').strip()}")

    # -- Prometheus --------------------------------------------------------------------
    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def scrape_targets(self) -> list[dict]:
        """What the Prometheus operator makes of the rendered ServiceMonitors: each selects
        Services by label; each endpoint (a Service port by name) of each Service is scraped
        on every running process of the Deployments the Service selects, labelled as the
        operator labels it: job and service = the Service's name, namespace, endpoint = the
        port's name, pod = the Deployment's name and the process id (a new process is a new
        pod). The services add version (and source) themselves."""
        services = [d for d in self.docs if d["kind"] == "Service"]
        deployments = overlay.workloads(self.docs)
        out = []
        for sm in (d for d in self.docs if d["kind"] == "ServiceMonitor"):
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
                        w = self.workloads.get(dep["name"])
                        if (dep["namespace"] != meta.get("namespace") or not w or not w.proc
                                or not overlay.selects(svc["spec"]["selector"], dep["labels"])):
                            continue
                        cport = target if isinstance(target, str) else next(
                            (n for n, v in dep["ports"].items() if v == target), None)
                        if cport in w.listen:
                            out.append({"job": meta["name"], "namespace": meta["namespace"], "endpoint": ep["port"],
                                        "address": f"127.0.0.1:{w.listen[cport]}", "pod": f"{dep['name']}-{w.proc.pid}"})
        return out

    def gateway_targets(self) -> list[dict]:
        """What the Prometheus operator makes of the rendered PodMonitors that select the
        ingress gateway (namespace istio-system, the Gateway's selector labels): its Envoy's
        `/stats/prometheus` (here its admin port), job `<namespace>/<name>` as the operator
        names a PodMonitor's, labelled with the gateway's namespace and pod. Without them
        the 503s the gateway answers for a dead canary are counted nowhere (no app sees
        them). The PodMonitor keeps only Istio's `istio_requests_total` of the release's app
        Service; the plain Envoys here have no Istio stats, so the same fact is kept as Envoy
        counts it: `envoy_cluster_upstream_rq_xx` of that Service's subset clusters
        (`outbound|<port>|<version>|<service>.<namespace>.svc.cluster.local`), a few
        series per version."""
        gw = self.infra.get("envoy-gateway")
        gateway = next((d for d in self.docs if d["kind"] == "Gateway"), None)
        if not gw or not gateway:
            return []
        labels = gateway["spec"].get("selector") or {}
        out = []
        for pm in (d for d in self.docs if d["kind"] == "PodMonitor"):
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
                            "pod": f"{overlay.GATEWAY_SVC}-{gw.pid}", "path": ep.get("path", "/metrics"),
                            "address": f"127.0.0.1:{self.ports.gateway_admin}", "keep": keep})
        return out

    def prometheus_config(self) -> dict:
        """Scrape config for the running processes and the gateway, and the rendered
        PrometheusRule's groups as a rule file (the chart's rules, under this release's names)."""
        rules = self.run / "prometheus" / "rules.yml"
        groups = [g for d in self.docs if d["kind"] == "PrometheusRule" for g in (d["spec"].get("groups") or [])]
        if groups:
            prometheus.write_config(rules, {"groups": groups})
        config = prometheus.scrape_config(self.scrape_targets(), self.scrape_interval, [rules] if groups else [])
        for t in self.gateway_targets():
            config["scrape_configs"].append({
                "job_name": t["job"], "metrics_path": t["path"], "scheme": "http",
                "static_configs": [{"targets": [t["address"]], "labels": {
                    "namespace": t["namespace"], "pod": t["pod"], "endpoint": t["endpoint"]}}],
                "metric_relabel_configs": [{"source_labels": ["__name__", "envoy_cluster_name"],
                                            "regex": t["keep"], "action": "keep"}]})
        return config

    def start_prometheus(self) -> None:
        if not self.with_prometheus:
            return
        workdir = self.run / "prometheus"
        shutil.rmtree(workdir / "data", ignore_errors=True)  # each run's experiment starts empty
        try:
            svc = prometheus.server("prometheus", listen=f"127.0.0.1:{self.ports.prometheus}", workdir=workdir,
                                   config=self.prometheus_config(), retention="1d", log_level="warn")
        except AssertionError as err:  # not installed (scripts/mesh.sh installs it)
            raise RuntimeError(str(err)) from None
        self.prometheus = self.spawn(svc.name, [svc.binary, *svc.args])
        wait_for(lambda: http_ok(svc.ready_url), 60, "prometheus", self.prometheus)

    def reload_prometheus(self) -> None:
        """New scrape targets (processes started or replaced) and rules: rewrite the file and
        send SIGHUP (Prometheus re-reads its configuration)."""
        if self.prometheus and self.prometheus.alive():
            prometheus.write_config(self.run / "prometheus" / "prometheus.yml", self.prometheus_config())
            os.kill(self.prometheus.pid, signal.SIGHUP)

    def start(self, args: list[str]) -> None:
        with self.lock:
            text, self.docs = self.render(args)
            self.args = list(args)
            self.workloads = self.plan(self.docs, {})
            config = self.write_config(text, self.docs, self.workloads)
            for w in self.workloads.values():
                self.start_workload(w)
            self.start_infra(config)
            for w in self.workloads.values():
                self.wait_workload(w)
            self.start_prometheus()

    def upgrade(self, args: list[str]) -> dict:
        """Re-render with these values and bring the running experiment to them."""
        with self.lock:
            t0 = time.monotonic()
            xds = self.infra.get("istio-xds")
            if xds and (not xds.alive() or not self.xds_ready(1)):
                raise RuntimeError("Istio's control plane (istio-xds) is down; the supervisor is starting it again "
                                   "(its log says when it is back): try again then")
            text, docs = self.render(args)
            new = self.plan(docs, self.workloads)
            started = [w for n, w in new.items() if self.workloads.get(n) is not w]
            stopped = [w for n, w in self.workloads.items() if new.get(n) is not w]
            # one that exited comes back, as Kubernetes would recreate its pod
            revived = [w for w in new.values() if all(w is not s for s in started) and w.proc and not w.proc.alive()]
            for w in started + revived:
                self.start_workload(w)
                self.gone.discard(w.name)
            for w in started + revived:
                self.wait_workload(w)
            # Make before break: a Deployment that goes away keeps its endpoints through the
            # push of the new routing, and loses them only in a second push, once no route
            # sends it anything. Istio pushes endpoints (EDS) before routes (RDS), so removing
            # both at once leaves a moment where the old weights point at no endpoint (503).
            gone = {w.name: w for w in stopped if w.name not in new}
            draining = [d for d in self.docs if d["kind"] == "Deployment" and d["metadata"]["name"] in gone]
            self.write_config(text, docs + draining, {**new, **gone})
            try:
                applied = self.apply()
            except Exception:
                for w in started:
                    w.proc.stop()
                self.write_config((self.run / "rendered.yaml").read_text(), self.docs, self.workloads)
                raise
            for w in stopped:
                w.proc.stop()
            self.docs, self.workloads, self.args = docs, new, list(args)
            if gone:
                self.write_config(text, docs, new)
                after = self.apply()
                applied = {**applied, "push_ms": applied["push_ms"] + after["push_ms"],
                           **{k: list(dict.fromkeys((applied[k] or []) + (after[k] or [])))
                              for k in ("created", "updated", "deleted")}}
            self.generation += 1
            self.reload_prometheus()
            return {"values": LOCAL_DEFAULTS + list(args), "started": [w.name for w in started + revived],
                    "stopped": [w.name for w in stopped], "istio": applied,
                    "seconds": round(time.monotonic() - t0, 2)}

    def apply_docs(self, docs: list[dict]) -> dict:
        """Push these chart objects (with the running processes' endpoints) as they are:
        for experiments with a recipe that is not the chart's (tests/mesh/test_seed_recipe.py).
        The next upgrade brings the chart's back."""
        with self.lock:
            self.write_config(overlay.dump(docs), docs, self.workloads)
            return self.apply()

    def restart(self, name: str) -> None:
        with self.lock:
            w = self.workloads[name]
            if w.proc and w.proc.alive():
                w.proc.stop()
            self.start_workload(w)
            self.gone.discard(name)
            self.wait_workload(w)
            self.reload_prometheus()

    XDS_BACKOFF = (1, 2, 4, 8, 16, 30)  # seconds before restarting istio-xds, by failures in a row

    def check(self) -> str | None:
        """Report exits once; restarts Istio's control plane; returns a reason to stop when
        an Envoy is gone."""
        for name, p in self.infra.items():
            if name != "istio-xds" and not p.alive():
                return f"{name} (pid {p.pid}) exited with status {p.returncode}; see {p.log_path}"
        self.check_control_plane()
        for name, w in list(self.workloads.items()):
            if w.proc and not w.proc.alive() and not w.proc.expected_exit and name not in self.gone:
                self.gone.add(name)
                code = w.proc.returncode
                how = f"signal {-code}" if code < 0 else f"status {code}"
                log(f"{name} ({w.binary}, pid {w.proc.pid}) exited with {how}; the experiment goes on "
                    f"without it (see {w.proc.log_path.name}; the next `scripts/mesh.sh upgrade` starts it again)")
        p = self.prometheus
        if p and not p.alive() and not p.expected_exit and "prometheus" not in self.gone:
            self.gone.add("prometheus")
            log(f"prometheus (pid {p.pid}) exited with status {p.returncode}; the experiment goes on without "
                f"it, `make experiment` has nothing to read (see {p.log_path.name})")
        return None

    def check_control_plane(self) -> None:
        """An exit of istio-xds is no outage of the experiment: the Envoys keep serving the
        configuration they have (as proxies do while istiod is away) and retry their ADS
        stream. Started again after a back-off that grows with failures in a row (reset once
        it has run for a minute), with the configuration in force."""
        p = self.infra.get("istio-xds")
        if p is None or p.expected_exit:
            return
        now = time.monotonic()
        if p.alive():
            if self.xds_down_since is not None and self.xds_ready(0.5) and self.proxies_synced():
                self.xds_up_since = now
                log(f"istio-xds is back (pid {p.pid}), {now - self.xds_down_since:.1f} s after it exited; both "
                    "Envoys are connected to it again")
                self.xds_down_since = None
            elif self.xds_failures and self.xds_down_since is None and now - self.xds_up_since > 60:
                self.xds_failures = 0
            return
        if self.xds_restart_at is None:
            delay = self.XDS_BACKOFF[min(self.xds_failures, len(self.XDS_BACKOFF) - 1)]
            self.xds_failures += 1
            self.xds_restart_at = now + delay
            if self.xds_down_since is None:
                self.xds_down_since = now
            code = p.returncode
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log(f"istio-xds (pid {p.pid}) exited with {how}; the Envoys keep serving their last configuration; "
                f"starting it again in {delay} s (see {p.log_path.name}); upgrades are refused until it is back")
        elif now >= self.xds_restart_at:
            self.xds_restart_at = None
            with self.lock:
                new = self.start_xds(self.run / "istio.yaml")
            log(f"istio-xds started again (pid {new.pid})")

    def stop(self) -> None:
        for w in self.workloads.values():
            if w.proc:
                w.proc.expected_exit = True
        for p in list(self.infra.values())[::-1]:
            p.expected_exit = True
        procs = ([self.prometheus] if self.prometheus else []) + [w.proc for w in self.workloads.values() if w.proc] \
            + list(self.infra.values())[::-1]
        for p in procs:
            p.terminate()
        for p in procs:
            p.stop()

    def banner(self) -> str:
        p = self.ports
        u = f"http://sms.localhost:{p.gateway}"
        rows = "\n".join(f"    {w.name:<24} pid {w.proc.pid:<8} {w.main_url:<30} metrics {w.metrics_url}"
                         for w in self.workloads.values())
        return f"""
  The experiment is running (Ctrl-C stops it). Values: {' '.join(LOCAL_DEFAULTS + self.args)}

  Open  {u}/sms/   (Envoy, the ingress gateway programmed by Istio from the chart's
                                Gateway and VirtualService: the canary split, the sticky cookie)
  Force a version:  {u.replace('sms.localhost', 'canary.sms.localhost')}/sms/   or   -H 'x-version: v2'
  Change the values live (like helm upgrade; no restart, no failed request):
    scripts/mesh.sh upgrade --set istio.canary.weights.stable=80 --set istio.canary.weights.canary=20
  Processes (one per rendered Deployment):
{rows}
    istio-xds                pid {self.infra['istio-xds'].pid:<8} ADS 127.0.0.1:{p.xds}  debug http://127.0.0.1:{p.istiod}/debug/configz
    envoy-gateway            pid {self.infra['envoy-gateway'].pid:<8} {u}  admin http://127.0.0.1:{p.gateway_admin}/config_dump
    envoy-sidecar            pid {self.infra['envoy-sidecar'].pid:<8} the apps' way to the model: {p.vip}  admin http://127.0.0.1:{p.sidecar_admin}/config_dump
{self.prometheus_banner()}  Files: {self.run}/ (rendered.yaml, istio.yaml: what Istio was given; logs)
"""

    def prometheus_banner(self) -> str:
        if not self.prometheus:
            return ""
        jobs = sorted({t["job"] for t in self.scrape_targets() + self.gateway_targets()})
        rules = (self.run / "prometheus" / "rules.yml").exists()
        ns = next((d["metadata"]["namespace"] for d in self.docs if d["kind"] == "Deployment"), "sms-app")
        return f"""    prometheus               pid {self.prometheus.pid:<8} {self.prometheus_url}  scrapes every process each {self.scrape_interval} as the chart's
                                          Service/PodMonitors do (jobs {', '.join(jobs) or 'none: monitoring.enabled=false'}){'; the chart' + "'" + 's rules' if rules else ''}
  Traffic: labelled messages from the data set's test split, as visitors with their cookies and guesses:
    make mesh-traffic ARGS='--duration 60 --concurrency 8'
  The verdict of both experiments from this Prometheus (docs/experiment.md; no 24 h minimum duration locally):
    make experiment ARGS='--prometheus {self.prometheus_url} --namespace {ns} --window 15m --min-samples 1000 --min-duration 0'
"""

    def summary(self) -> str:
        """Per version, from the running processes' metrics pages (their counters since they
        started): the apps' requests, 5xx, classifications, guess agreement and cache hits;
        the models' calls, failed calls, guess agreement and the shadow's agreement with the
        serving model."""
        lines = ["", "  Summary (the processes' counters since they started):"]
        pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "-"  # noqa: E731
        for w in self.workloads.values():
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


# -- the command line ------------------------------------------------------------------

def values_args(argv: list[str]) -> list[str]:
    out = []
    it = iter(argv)
    for a in it:
        if a in ("--set", "-f", "--values"):
            try:
                out += [a if a == "--set" else "-f", next(it)]
            except StopIteration:
                raise SystemExit(f"error: {a} needs a value")
        elif a.startswith("--set="):
            out += ["--set", a[len("--set="):]]
        else:
            raise SystemExit(f"error: unknown argument {a} (use --set KEY=VALUE or -f values.yaml)")
    cwd = os.environ.get("MESH_CWD", os.getcwd())
    return [os.path.join(cwd, x) if prev == "-f" else x for prev, x in zip([""] + out, out)]


def read_lock(run: Path) -> dict | None:
    try:
        return json.loads((run / "instance.json").read_text())
    except (OSError, ValueError):
        return None


def cmd_run(args: list[str], run: Path) -> int:
    state = RunState(run, "experiment")
    if not state.lock():
        other = read_lock(run) or {}
        print(f"error: the experiment already runs from {run} (pid {other.get('pid', '?')}, "
              f"gateway {other.get('gateway', '?')}, values: {' '.join(other.get('values', []))}); "
              "change it with `scripts/mesh.sh upgrade --set ...` or stop it (Ctrl-C in its terminal). "
              "Nothing was changed.", file=sys.stderr)
        return 1
    # a previous supervisor that could not stop in order (kill -9, the OOM killer): its
    # processes died with it; stop anything left of it, before the ports are checked
    for line in state.clean():
        log(line)
    if read_lock(run):
        (run / "instance.json").unlink()
        log(f"removed the stale {run / 'instance.json'} of that run")
    ports = Ports.from_env()
    busy = [f"{k} {v}" for k, v in vars(ports).items() if isinstance(v, int) and k in
            ("gateway", "gateway_admin", "sidecar_admin", "xds", "istiod", "control", "prometheus")
            and not port_free(v)]
    if not port_free(ports.xds, ports.vip) or busy:
        print(f"error: ports in use: {', '.join(busy) or ports.vip}; another program (or an experiment from "
              "another directory) holds them. Set MESH_PORT, MESH_ADMIN_PORT, ... (docs/mesh.md).", file=sys.stderr)
        return 1
    for f in run.glob("*.log"):
        f.unlink()
    profile = os.environ.get("MESH_PROFILE", "release")
    mesh = LocalMesh(run, ports, chart.CHART.parent / "target" / profile, Path(os.environ["ISTIO_XDS_DIR"]),
                     os.environ["ENVOY_BIN"], extra_env=dict(e.split("=", 1) for e in
                                                             os.environ.get("MESH_EXTRA_ENV", "").split() if e),
                     prometheus=True, scrape_interval=os.environ.get("MESH_SCRAPE_INTERVAL", "2s"), state=state)
    stopping = threading.Event()

    running = threading.Event()

    class Interrupted(Exception):
        pass

    def on_signal(signum, _frame):
        stopping.set()
        if not running.is_set():  # still starting: stop waiting for readiness at once
            raise Interrupted()

    # SIGHUP: the terminal was closed (or the session ended); stop as for Ctrl-C
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    server = None
    try:
        log(f"starting: values {' '.join(LOCAL_DEFAULTS + args)}")
        mesh.start(args)

        def record():  # for `upgrade` and for a second instance's message: the values in force
            (run / "instance.json").write_text(json.dumps({
                "pid": os.getpid(), "control": f"http://127.0.0.1:{ports.control}",
                "gateway": f"http://sms.localhost:{ports.gateway}/sms/", "prometheus": mesh.prometheus_url,
                "values": LOCAL_DEFAULTS + mesh.args}))

        record()
        server = control_server(mesh, ports.control, record)
        say(mesh.banner(), sys.stdout)
        running.set()
        while not stopping.wait(0.3):
            reason = mesh.check()
            if reason:
                log(f"stopping: {reason}")
                return 1
        return 0
    except Interrupted:
        return 0
    except RuntimeError as err:
        if not stopping.is_set():
            log(f"error: {err}")
            return 1
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        if server:
            server.shutdown()
        (run / "instance.json").unlink(missing_ok=True)
        if running.is_set():
            try:
                say(mesh.summary(), sys.stdout)
            except Exception as err:  # noqa: BLE001 - stopping matters more than the summary
                log(f"no summary: {err!r}")
        mesh.stop()
        state.release()
        log(f"stopped every process it started (logs in {run}/)")


def control_server(mesh: LocalMesh, port: int, record) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            if self.path != "/upgrade":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            try:
                result, code = mesh.upgrade(body.get("args", [])), 200
                record()
                log(f"upgraded in {result['seconds']} s: values {' '.join(result['values'])}; started "
                    f"{result['started'] or 'none'}, stopped {result['stopped'] or 'none'}; Istio: "
                    f"updated {len(result['istio']['updated'] or [])} objects, created {len(result['istio']['created'] or [])}, "
                    f"deleted {len(result['istio']['deleted'] or [])}")
            except Exception as err:  # refused values, Istio's validation, a process not starting
                result, code = {"error": str(err)}, 400
                log(f"upgrade refused: {err}")
            data = json.dumps(result).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def cmd_upgrade(args: list[str], run: Path) -> int:
    inst = read_lock(run)
    if not inst:
        print(f"error: no experiment runs from {run} (start it with `make mesh`)", file=sys.stderr)
        return 1
    req = urllib.request.Request(inst["control"] + "/upgrade", method="POST",
                                 data=json.dumps({"args": args}).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            result = json.load(r)
    except urllib.error.HTTPError as e:
        print(f"error: {json.loads(e.read()).get('error')}; the experiment keeps its values", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError) as e:
        print(f"error: the experiment (pid {inst['pid']}) does not answer: {e}", file=sys.stderr)
        return 1
    ist = result["istio"]
    print(f"upgraded in {result['seconds']} s, values: {' '.join(result['values'])}\n"
          f"  processes started: {', '.join(result['started']) or 'none'}; stopped: {', '.join(result['stopped']) or 'none'}\n"
          f"  Istio objects updated: {', '.join(ist['updated'] or []) or 'none'}; created: "
          f"{', '.join(ist['created'] or []) or 'none'}; deleted: {', '.join(ist['deleted'] or []) or 'none'}\n"
          f"  pushed to the Envoys and acknowledged ({ist['push_ms']} ms)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "upgrade"):
        print(__doc__, file=sys.stderr)
        return 2
    run = Path(os.environ.get("MESH_DIR") or chart.CHART.parent / ".cache" / "mesh")
    args = values_args(argv[1:])
    if argv[0] == "run":
        return cmd_run(args, run)
    return cmd_upgrade(args, run)


if __name__ == "__main__":
    sys.exit(main())
