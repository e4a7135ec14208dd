"""The local experiment's supervisor (`make mesh`; its command line is smsdev.mesh's
__main__): the chart rendered with the real Helm engine, one process per rendered
Deployment, Istio's own control plane (istio-xds: the pilot config generator, no
Kubernetes), two real Envoys it programs over ADS (the ingress gateway and the apps'
sidecar), and a real Prometheus scraping every process as the chart's ServiceMonitors
would, with the chart's rules, so that `make experiment` reads the verdict from it. See
docs/mesh.md.

An upgrade works like `helm upgrade` without --reuse-values: the values given replace the
previous ones (the local mode's defaults still apply). New Deployments get their process
started and ready before the routes that reach them are pushed; Deployments that are gone
are stopped after the push of the routes that no longer reach them, and lose their
endpoints in a second push after that; one whose environment changed is replaced the same
way (start the new one, push, stop the old one): no request needs a process or an endpoint
that is not there.

A process that exits is logged by name; the experiment goes on (a shadow outage is
invisible to users). Istio's control plane exiting is logged too: the Envoys keep serving
their last configuration, as proxies do on a cluster, and this supervisor starts it again
with back-off (1 s, 2 s, 4 s ... 30 s), as Kubernetes restarts istiod; the Envoys reconnect
and get their configuration again. Only an Envoy exiting stops the experiment. Every
process it starts is in a session of its own and dies with the supervisor however it ends
(smsdev.procs), recorded in the run state (smsdev.runstate) while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from smsdev.console import log
from smsdev.mesh import bootstrap, overlay, scrape
from smsdev.mesh.plan import COMPONENT, LOCAL_DEFAULTS, Workload, plan, render, write_config
from smsdev.mesh.ports import Ports
from smsdev.procs import Proc, http_ok
from smsdev.prometheus import server as prometheus_server, write_config as write_prometheus_config
from smsdev.runstate import RunState


def wait_for(check, seconds: float, what: str, proc: Proc | None = None) -> None:
    """Until check() is true; an error after `seconds`, or at once when `proc` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {seconds:.0f} s" + (f"; see {proc.log_path}" if proc else ""))


class LocalMesh:
    """The experiment's processes, Istio's configuration and its Prometheus, kept in step
    with the values in force (start, upgrade, restart, check, stop)."""

    def __init__(self, run_dir: Path, ports: Ports, bindir: Path, istio_dir: Path, envoy_bin: str,
                 extra_env: dict | None = None, log_level: str = "warning", prometheus: bool = False,
                 scrape_interval: str = "2s", state: RunState | None = None):
        """`prometheus`: also run a Prometheus (smsdev.prometheus's) scraping the processes
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
        """The running processes the rendered ServiceMonitors select (smsdev.mesh.scrape)."""
        return scrape.scrape_targets(self.docs, self.workloads)

    def gateway_targets(self) -> list[dict]:
        """The gateway's Envoy as the rendered PodMonitors select it (smsdev.mesh.scrape)."""
        return scrape.gateway_targets(self.docs, self.infra.get("envoy-gateway"), self.ports.gateway_admin)

    def prometheus_config(self) -> dict:
        return scrape.config(self.docs, self.scrape_targets(), self.gateway_targets(), self.scrape_interval,
                             self.run / "prometheus" / "rules.yml")

    def start_prometheus(self) -> None:
        if not self.with_prometheus:
            return
        workdir = self.run / "prometheus"
        shutil.rmtree(workdir / "data", ignore_errors=True)  # each run's experiment starts empty
        try:
            svc = prometheus_server("prometheus", listen=f"127.0.0.1:{self.ports.prometheus}", workdir=workdir,
                                    config=self.prometheus_config(), retention="1d", log_level="warn")
        except AssertionError as err:  # not installed (scripts/mesh.sh installs it)
            raise RuntimeError(str(err)) from None
        self.prometheus = self.spawn(svc.name, [svc.binary, *svc.args])
        wait_for(lambda: http_ok(svc.ready_url), 60, "prometheus", self.prometheus)

    def reload_prometheus(self) -> None:
        """New scrape targets (processes started or replaced) and rules: rewrite the file and
        send SIGHUP (Prometheus re-reads its configuration)."""
        if self.prometheus and self.prometheus.alive():
            write_prometheus_config(self.run / "prometheus" / "prometheus.yml", self.prometheus_config())
            os.kill(self.prometheus.pid, signal.SIGHUP)

    def start(self, args: list[str]) -> None:
        with self.lock:
            text, self.docs = render(args)
            self.args = list(args)
            self.workloads = plan(self.docs, {}, self.ports, self.extra_env)
            config = write_config(self.run, self.ports, text, self.docs, self.workloads)
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
            text, docs = render(args)
            new = plan(docs, self.workloads, self.ports, self.extra_env)
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
            write_config(self.run, self.ports, text, docs + draining, {**new, **gone})
            try:
                applied = self.apply()
            except Exception:
                for w in started:
                    w.proc.stop()
                write_config(self.run, self.ports, (self.run / "rendered.yaml").read_text(), self.docs, self.workloads)
                raise
            for w in stopped:
                w.proc.stop()
            self.docs, self.workloads, self.args = docs, new, list(args)
            if gone:
                write_config(self.run, self.ports, text, docs, new)
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
            write_config(self.run, self.ports, overlay.dump(docs), docs, self.workloads)
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
