"""What `make mesh` runs for a rendered chart: the chart rendered with the local mode's
values (smsdev.mesh.render, the real Helm engine), one local process (a Workload) per
rendered Deployment with the addresses of this machine, and the configuration Istio is
given for them (the render plus smsdev.mesh.overlay's local additions)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from smsdev import ROOT
from smsdev import stack as local  # the one description of the local stack
from smsdev.mesh import overlay
from smsdev.mesh import render as chart
from smsdev.mesh.ports import Ports, port_free
from smsdev.procs import Proc

COMPONENT = "app.kubernetes.io/component"
# Set per process here, whatever the render says (cluster paths and addresses).
DROP = {"HTTP_ADDR", "MODEL_HOST", "GRPC_ADDR", "METRICS_ADDR", "INFERENCE_HTTP_ADDR", "MODEL_ROOT", "LOG_FORMAT"}
# The local mode's values (a --set given by the user wins): the shadow runs, and the
# Gateway also serves `sms.localhost` (Istio wants a dotted name; browsers resolve
# *.localhost to the loopback), so a browser reaches it at http://sms.localhost:PORT/
# (and the forced versions at canary.sms.localhost / stable.sms.localhost).
LOCAL_DEFAULTS = ["--set", "modelService.shadow.enabled=true",
                  "--set", "istio.hosts={sms-istio.local,sms.localhost}"]


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


def render(args: list[str]) -> tuple[str, list[dict]]:
    """The chart rendered with the local defaults, then `args` (--set K=V, -f FILE): its
    text and its objects."""
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


def _take(base: int, used: set[int]) -> int:
    p = base
    while p in used or not port_free(p):
        p += 1
        if p > base + 50:
            raise RuntimeError(f"no free port from {base}")
    used.add(p)
    return p


def plan(docs: list[dict], running: dict[str, Workload], ports: Ports, extra_env: dict) -> dict[str, Workload]:
    """A Workload per rendered Deployment; one identical to a running one keeps it (and its
    process), a new one gets free ports next to the others'."""
    called = overlay.called_hosts(docs)
    used = {p for w in running.values() for p in w.listen.values()}
    out = {}
    for w in overlay.workloads(docs):
        env = {k: v for k, v in w["env"].items() if k not in DROP}
        env.update(LOG_FORMAT="text", MODEL_ROOT=os.environ.get("MODEL_ROOT", str(ROOT / "models")))
        env.update(extra_env)
        comp = w["labels"].get(COMPONENT)
        old = running.get(w["name"])
        if comp == "app":
            model = urlsplit(w["env"].get("MODEL_HOST", ""))
            host = (model.hostname or "").split(".")[0]
            if host not in called:
                raise RuntimeError(f"{w['name']}: MODEL_HOST {model.geturl()!r} names no rendered Service")
            env["MODEL_HOST"] = f"http://{ports.vip}:{model.port}"
            if old and old.env == {**env, "HTTP_ADDR": old.env["HTTP_ADDR"]}:
                out[w["name"]] = old
                continue
            port = _take(ports.app, used)
            svc = local.app(w["name"], http=f"127.0.0.1:{port}", model_host=env.pop("MODEL_HOST"), **env)
            out[w["name"]] = Workload(w["name"], svc.binary, svc.env, {"http": port}, svc.addresses["ui"],
                                      svc.addresses["metrics"], svc.ready_url)
        elif comp == "model":
            # the addresses are this supervisor's (smsdev.stack's model() adds its own Open
            # Inference Protocol HTTP port): only the render's environment counts
            local_addrs = {k: old.env[k] for k in ("GRPC_ADDR", "METRICS_ADDR", "INFERENCE_HTTP_ADDR")
                           if old and k in old.env and k not in env}
            if old and old.env == {**env, **local_addrs}:
                out[w["name"]] = old
                continue
            grpc, metrics = _take(ports.model, used), _take(ports.metrics, used)
            http = _take(ports.model, used)  # the Open Inference Protocol's HTTP port
            svc = local.model(w["name"], grpc=f"127.0.0.1:{grpc}", metrics=f"127.0.0.1:{metrics}",
                              http=f"127.0.0.1:{http}", model_root=Path(env.pop("MODEL_ROOT")), **env)
            out[w["name"]] = Workload(w["name"], svc.binary, svc.env,
                                      {"grpc": grpc, "http-metrics": metrics, "http-inference": http},
                                      f"grpc://{svc.addresses['grpc']}", svc.addresses["metrics"], svc.ready_url)
        else:
            raise RuntimeError(f"Deployment {w['name']} has no {COMPONENT} app|model label")
    return out


def write_config(run: Path, ports: Ports, text: str, docs: list[dict], workloads: dict[str, Workload]) -> Path:
    """`run`/rendered.yaml (the render) and `run`/istio.yaml (what istio-xds reads: the
    objects with the local overlay for these processes), the latter replaced in one step."""
    listen = {n: w.listen for n, w in workloads.items()}
    objs = overlay.overlay(docs, listen, ports.gateway, ports.vip)
    (run / "rendered.yaml").write_text(text)
    path = run / "istio.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(overlay.dump(objs))
    tmp.replace(path)
    return path
