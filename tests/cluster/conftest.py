"""One helper starts `make cluster`'s script as a user's terminal would (its own process
group, debug builds, a state directory of the test's own, a free port for the API relay)
and hands out kubectl and helm bound to that cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "cluster"
BIN = ROOT / ".cache" / "cluster" / "bin"
sys.path.insert(0, str(ROOT / "scripts"))
import stack as local  # noqa: E402 - children, listening: processes followed by PID


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


def ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return pod["status"].get("phase") == "Running" and conds.get("Ready") == "True"


def start_cluster(name: str, *helm_args: str, timeout: float = 600) -> Cluster:
    state = OUT / name
    log = OUT / f"{name}.out"
    OUT.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    netns = f"sms-test-{os.getpid() % 10000}-{name[:6]}"
    env = {**os.environ, "CLUSTER_DIR": str(state), "CLUSTER_PROFILE": "debug", "CLUSTER_API_PORT": str(api_port),
           "CLUSTER_NETNS": netns, "CLUSTER_GATEWAY_PORT": str(free_port())}
    with open(log, "wb") as f:
        proc = subprocess.Popen(["bash", "scripts/cluster.sh", *helm_args], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    c = Cluster(proc, state, log, api_port, netns)
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


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster("main")
    yield c
    stop(c)
