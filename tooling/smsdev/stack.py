"""The local stack, described once: which binaries, the environment each gets, the ports,
and when each is ready. Every place that runs the services on this machine goes through
here: `make run` (smsdev.run), `make bench`, and the ui, protocol, reliability and
observability test suites (the cluster's pods run the same binaries from the chart's
Deployments). The processes themselves are smsdev.procs'; a
Prometheus is smsdev.prometheus'.

Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from smsdev import ROOT
from smsdev.procs import Proc, ProcGroup, http_ok, poll
from smsdev.runstate import RunState

MODELS = ROOT / "models"


def binary(name: str, profile: str = "debug") -> Path:
    """A service binary from the cargo build the caller made (debug for tests), or a tool's
    absolute path as `tool` gives it."""
    if Path(name).is_absolute():
        return Path(name)
    path = ROOT / "target" / profile / name
    assert path.is_file() and os.access(path, os.X_OK), (
        f"{path.relative_to(ROOT)} is missing: build it with "
        f"`cargo build {'--release ' if profile == 'release' else ''}-p model-service -p app-service`")
    return path


@dataclass
class Service:
    """One process of the stack: its binary (and arguments), environment, and the URL that
    answers 200 once it is ready."""
    name: str
    binary: str
    env: dict
    ready_url: str
    addresses: dict = field(default_factory=dict)
    args: list = field(default_factory=list)


def model(name: str = "model", *, grpc: str, metrics: str, version: str = "v1", source: str = "app",
          model_root: Path = MODELS, http: str = "127.0.0.1:0", **env) -> Service:
    """A model service. Its metrics port opens only after the model is loaded and warmed,
    so the metrics page answering means it serves. `http`: the Open Inference Protocol's
    HTTP port (a free one unless given)."""
    return Service(name, "model-service", {
        "GRPC_ADDR": grpc, "METRICS_ADDR": metrics, "INFERENCE_HTTP_ADDR": http, "MODEL_ROOT": str(model_root),
        "MODEL_VERSION": version, "METRICS_SOURCE": source, **env,
    }, f"http://{metrics}/metrics", {"grpc": grpc, "metrics": f"http://{metrics}/metrics", "inference": f"http://{http}/v2"})


def app(name: str = "app", *, http: str, model_host: str, version: str = "v1", cache: bool = False,
        wait_for_model: bool = True, **env) -> Service:
    """An app service. Ready means /readyz (the model tier answers its health check);
    with wait_for_model=False, /livez (for an app whose model is down on purpose)."""
    return Service(name, "app-service", {
        "HTTP_ADDR": http, "MODEL_HOST": model_host, "APP_VERSION": version,
        "CACHE_ENABLED": "true" if cache else "false", **env,
    }, f"http://{http}/{'readyz' if wait_for_model else 'livez'}",
        {"url": f"http://{http}", "ui": f"http://{http}/sms/", "metrics": f"http://{http}/metrics"})


class Stack(ProcGroup):
    """Starts services and waits until each is ready (failing with its log if it exits)."""

    def __init__(self, log_dir: Path, profile: str = "debug", append_logs: bool = False, supervised: bool = False,
                 state: RunState | None = None):
        super().__init__(log_dir, supervised, state)
        self.profile = profile
        self.append_logs = append_logs

    def launch(self, service: Service, env: dict | None = None, output_to_pipe: bool = False) -> Proc:
        """Starts `service` (plus `env`) without waiting for it."""
        return self.start(service.name, [binary(service.binary, self.profile), *service.args],
                          env={**service.env, **(env or {})}, append=self.append_logs, output_to_pipe=output_to_pipe)

    def up(self, service: Service, env: dict | None = None, timeout: float = 90, interval: float = 0.1,
           output_to_pipe: bool = False) -> Proc:
        """Starts `service` and returns once it is ready (polled every `interval` s)."""
        proc = self.launch(service, env, output_to_pipe)
        self.wait_ready(service, proc, timeout, interval)
        return proc

    @staticmethod
    def wait_ready(service: Service, proc: Proc, timeout: float = 90, interval: float = 0.1):
        def ready():
            proc.check_alive()
            return http_ok(service.ready_url)
        poll(ready, timeout, what=f"{service.name} ready ({service.ready_url})", interval=interval)

