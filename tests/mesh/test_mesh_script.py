"""`make mesh` itself (scripts/mesh.sh, debug builds, free ports): it starts one process
per rendered Deployment and Envoy, honours --set, serves the browser's Host, and on
Ctrl-C (SIGINT) stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import requests

from harness import OUT, ROOT, free_port, poll


def free_pair() -> int:
    """A port p with p+1 free too (the script numbers its apps and models from a base)."""
    for _ in range(50):
        p = free_port()
        try:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def test_mesh_script_runs_the_experiment_and_stops_what_it_started():
    ports = dict(MESH_PORT=free_port(), MESH_ADMIN_PORT=free_port(), MESH_SIDECAR_PORT=free_port(),
                 MESH_APP_PORT=free_pair(), MESH_MODEL_PORT=free_pair(), MESH_METRICS_PORT=free_pair())
    env = {**os.environ, **{k: str(v) for k, v in ports.items()},
           "MESH_PROFILE": "debug", "MESH_DIR": str(OUT / "mesh-script")}
    log = open(OUT / "mesh-script.out", "wb")
    proc = subprocess.Popen(
        ["bash", "scripts/mesh.sh", "--set", "istio.canary.weights.stable=50",
         "--set", "istio.canary.weights.canary=50"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    kids: list[int] = []
    try:
        out = OUT / "mesh-script.out"
        poll(lambda: proc.poll() is None and "Ctrl-C stops it" in out.read_text(errors="replace"), 240,
             "scripts/mesh.sh to print its banner")
        banner = out.read_text(errors="replace")
        kids = children(proc.pid)
        assert len(kids) == 5, f"expected 4 services + Envoy, got {kids}"  # 50/50: canary present
        gw = f"http://127.0.0.1:{ports['MESH_PORT']}"
        assert f"{gw}/sms/" in banner
        s = requests.Session()
        seen = Counter()
        for i in range(100):  # the browser's Host, no cookie kept: the 50/50 split of --set
            s.cookies.clear()
            r = s.post(f"{gw}/sms/", json={"sms": f"hello {i}"}, timeout=10)
            assert r.status_code == 200, r.text
            seen[r.json()["app_version"]] += 1
        assert seen["v1"] > 20 and seen["v2"] > 20, seen
        for k in ("MESH_METRICS_PORT",):
            for off in (0, 1):
                m = requests.get(f"http://127.0.0.1:{ports[k] + off}/metrics", timeout=5).text
                assert "sms_model_predictions_total" in m
                assert f"http://127.0.0.1:{ports[k] + off}/metrics" in banner
        shadow = requests.get(f"http://127.0.0.1:{ports['MESH_METRICS_PORT'] + 1}/metrics", timeout=5).text
        assert 'source="shadow"' in shadow  # the script turns the shadow on
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        left = [k for k in kids if running(k)]
        for k in left:  # never leave them behind, but fail below
            os.kill(k, signal.SIGKILL)
    assert proc.returncode == 130, proc.returncode
    assert not left, f"still running after Ctrl-C: {left}"
    time.sleep(0.2)
