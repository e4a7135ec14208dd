"""One helper starts `make cluster`'s script as a user's terminal would (its own process
group, debug builds, a state directory of the test's own, a free port for the API relay)
and hands out kubectl and helm bound to that cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsdev.cluster.objects import HOST  # the gateway's host for the app in the cluster's values

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "cluster"
BIN = ROOT / ".cache" / "cluster" / "bin"
# grpcurl built for running inside a pod, as a mesh client (tests/cluster/run.sh)
GRPCURL = os.environ.get("GRPCURL_V1", "")
COOKIE = "sms-app-version"  # the sticky version cookie (istio.canary.stickyCookie.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    proc: subprocess.Popen
    state: Path
    log: Path
    api_port: int
    gateway_port: int
    prometheus_port: int
    netns: str

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                             capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
        return out

    def json(self, *args: str):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "helm"), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pods(self, namespace: str = "sms-app") -> list[dict]:
        return self.json("get", "pods", "-n", namespace)["items"]


def wait(predicate, seconds: float, what: str):
    """predicate()'s first truthy value, polled each second for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return pod["status"].get("phase") == "Running" and conds.get("Ready") == "True"


def start_cluster(name: str, *helm_args: str, timeout: float = 600) -> Cluster:
    state = OUT / name
    log = OUT / f"{name}.out"
    OUT.mkdir(parents=True, exist_ok=True)
    api_port, gateway_port, prometheus_port = free_port(), free_port(), free_port()
    netns = f"sms-test-{os.getpid() % 10000}-{name[:6]}"
    env = {**os.environ, "CLUSTER_DIR": str(state), "CLUSTER_PROFILE": "debug", "CLUSTER_API_PORT": str(api_port),
           "CLUSTER_NETNS": netns, "CLUSTER_GATEWAY_PORT": str(gateway_port),
           "CLUSTER_PROMETHEUS_PORT": str(prometheus_port)}
    with open(log, "wb") as f:
        proc = subprocess.Popen(["bash", "scripts/cluster.sh", *helm_args], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    c = Cluster(proc, state, log, api_port, gateway_port, prometheus_port, netns)
    deadline = time.monotonic() + timeout
    while "cluster ready" not in c.output():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(c)
            pytest.fail(f"make cluster did not come up:\n{c.output()[-4000:]}")
        time.sleep(1)
    return c


def stop(c: Cluster, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if c.proc.poll() is None:
        os.killpg(c.proc.pid, sig)
        try:
            c.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()


@pytest.fixture(scope="session")
def cluster():
    c = start_cluster("main")
    yield c
    stop(c)


class Visitors:
    """Users of the web app through the cluster's ingress gateway (127.0.0.1, Host
    sms.localhost), each a thread with a keep-alive connection: `new` ones arrive without
    a cookie at every request (the canary's weight decides their version), `pinned` ones
    keep the cookie of their first answer, and `returning` ones (a version each) come back
    with that version's cookie. Every answer is recorded as (time, kind, visitor, status,
    version); the load stops by itself after `seconds`."""

    def __init__(self, port: int, new: int = 4, pinned: int = 2, returning: tuple[str, ...] = ("v1", "v2"),
                 seconds: float = 300):
        import threading
        self.port, self.seconds = port, seconds
        self.records: list[tuple[float, str, int, int, str | None]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        plan = [("new", None)] * new + [("pinned", None)] * pinned + [("returning", v) for v in returning]
        self.threads = [threading.Thread(target=self._visit, args=(kind, i, cookie), daemon=True)
                        for i, (kind, cookie) in enumerate(plan)]

    def __enter__(self) -> "Visitors":
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(15)

    def _visit(self, kind: str, visitor: int, version: str | None) -> None:
        import http.client
        conn = None
        sent = 0
        cookie = f"{COOKIE}={version}" if version else None
        while not self.stopping.is_set() and time.monotonic() - self.started < self.seconds:
            headers = {"Host": HOST, "Content-Type": "application/json"}
            if cookie and kind != "new":
                headers["Cookie"] = cookie
            status, got = 0, None
            # a new text each time: v2's cache would answer a repeated one without
            # classifying it (the verdict counts classifications)
            sent += 1
            body = json.dumps({"sms": f"visitor {visitor}, message {sent}: are we still on for dinner tonight?"})
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", "/sms/", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                if status == 200:
                    got = json.loads(data)["app_version"]
                    if kind == "pinned" and cookie is None:
                        cookie = f"sms-app-version={got}"
            except (OSError, http.client.HTTPException, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.records.append((time.monotonic(), kind, visitor, status, got))
            if status not in (200,):
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def mark(self) -> int:
        with self.lock:
            return len(self.records)

    def since(self, mark: int) -> list[tuple[float, str, int, int, str | None]]:
        with self.lock:
            return self.records[mark:]

    def canary_share(self, answers: int, timeout: float = 120) -> float:
        """The share of v2 among the next `answers` answers to new visitors."""
        mark = self.mark()
        deadline = time.monotonic() + timeout
        while True:
            new = [r for r in self.since(mark) if r[1] == "new" and r[3] == 200]
            if len(new) >= answers:
                new = new[:answers]
                return sum(r[4] == "v2" for r in new) / len(new)
            assert time.monotonic() < deadline, f"only {len(new)} answers to new visitors in {timeout:.0f} s"
            time.sleep(0.2)

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        with self.lock:
            for r in self.records:
                out[r[3]] = out.get(r[3], 0) + 1
        return out



def pods(cluster, **labels: str) -> list[dict]:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    return cluster.json("get", "pods", "-n", "sms-app", "-l", selector)["items"]


def exec_in(cluster, pod: dict, container: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A program run inside the pod's container (its namespaces and user), as a mesh client."""
    return cluster.kubectl("exec", "-n", "sms-app", pod["metadata"]["name"], "-c", container, "--", *argv,
                           check=False, timeout=timeout)


def model_calls(cluster, pod: dict) -> int:
    """sms.v1 calls a model pod answered Ok (its own /metrics, read from inside the pod)."""
    out = exec_in(cluster, pod, "model", "curl", "-sS", "-m", "5", "http://127.0.0.1:9464/metrics")
    assert out.returncode == 0, out.stderr
    return sum(int(float(m.group(1))) for m in
               re.finditer(r'^sms_model_requests_total\{code="Ok"[^}]*\} (\S+)$', out.stdout, re.M))


def model_calls_by_version(cluster) -> dict[str, dict[str, int]]:
    """Each model pod's answered calls, by version (v1 serves, v2 is the shadow); a pod
    the autoscaler adds meanwhile counts from 0."""
    out: dict[str, dict[str, int]] = {"v1": {}, "v2": {}}
    for p in pods(cluster, **{"app.kubernetes.io/component": "model"}):
        out[p["metadata"]["labels"]["version"]][p["metadata"]["name"]] = model_calls(cluster, p)
    return out


def api(cluster, path: str, **params) -> dict:
    """The cluster Prometheus' HTTP API (`query`, `targets`, `rules`, `alerts`): its data."""
    url = f"http://127.0.0.1:{cluster.prometheus_port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]


def pod_pids(cluster, pod: dict) -> list[int]:
    """The processes of a pod's containers: those in the pod's network namespace (the node
    names it after the pod's UID, in its own mount namespace), found by namespace, never
    by name."""
    netns = "sms-" + pod["metadata"]["uid"].replace("-", "")[:12]
    node = next(c["pid"] for c in json.loads((cluster.state / "processes.json").read_text())["children"]
                if c["name"] == "sms-node")
    out = subprocess.run(["nsenter", "-t", str(node), "-m", "ip", "netns", "pids", netns],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out, f"no process in {netns}"
    return [int(p) for p in out]


def deployed_revision(cluster) -> int:
    """The release's revision that is deployed now (the last one may have failed: a later
    `helm rollback` goes to this one)."""
    history = json.loads(cluster.helm("history", "sms-app", "-n", "sms-app", "-o", "json").stdout)
    return next(h["revision"] for h in reversed(history) if h["status"] == "deployed")


@dataclass
class Answer:
    status: int
    version: str | None  # the app version that answered (200 only)
    set_cookie: str | None  # the Set-Cookie header's name=value, if any
    set_cookie_header: str
    body: str


def post(port: int, i: int, host: str = HOST, headers: dict | None = None) -> Answer:
    """One visitor's message through the gateway, a new text each time (v2's cache would
    answer a repeated one without the model)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/sms/", json.dumps({"sms": f"message {i}: lunch at noon, or later?"}),
                     {"Host": host, "Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        body = r.read().decode(errors="replace")
        cookie = r.getheader("set-cookie") or ""
        version = json.loads(body)["app_version"] if r.status == 200 else None
        return Answer(r.status, version, cookie.split(";")[0] or None, cookie, body)
    finally:
        conn.close()


def answers(cluster, n: int, **kw) -> list[Answer]:
    """n messages through the gateway, eight at a time (`post`'s keywords)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: post(cluster.gateway_port, i, **kw), range(n)))
