"""`make cluster` leaves nothing behind: closing its terminal (SIGHUP to its process group)
stops it in order; `kill -9` of the supervisor takes every process it started with it
(the parent-death signal), and the next start removes the network namespace the dead run
left and says so. Processes are followed by PID (the supervisor's processes.json and its
children in /proc), never by name."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import start_cluster, stop
from smsdev.procs import children, listening, running


def started(c) -> dict[int, str]:
    recorded = {e["pid"]: e["name"] for e in json.loads((c.state / "processes.json").read_text())["children"]}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "sms-node"} <= set(
        recorded.values()), recorded
    supervisor = json.loads((c.state / "processes.json").read_text())["supervisor"]["pid"]
    assert children(supervisor) == set(recorded), (children(supervisor), recorded)
    return recorded


def gone_within(pids, netns: str, api_port: int, seconds: float = 5) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        alive = [p for p in pids if running(p)]
        if not alive and not Path("/run/netns", netns).exists() and not any(
                port == api_port for (_, port) in listening()):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"after {seconds} s: alive {[p for p in pids if running(p)]}, "
                         f"netns {netns} {'still there' if Path('/run/netns', netns).exists() else 'gone'}")


def test_a_closed_terminal_stops_the_cluster_and_a_killed_one_is_cleaned_at_the_next_start():
    c = start_cluster("hup")
    pids = started(c)
    t0 = time.monotonic()
    stop(c, signal.SIGHUP)
    stopping = time.monotonic() - t0
    took = gone_within(pids, c.netns, c.api_port, seconds=5)
    assert c.proc.returncode == 0, c.output()[-2000:]
    assert "stopping the cluster" in c.output()
    print(f"SIGHUP: the cluster stopped in order in {stopping:.1f} s (pods' grace periods included); "
          f"{len(pids)} processes gone and the namespace removed {took:.2f} s after the supervisor exited")

    c = start_cluster("hup")  # the same state directory: comes up normally
    pids = started(c)
    supervisor = json.loads((c.state / "processes.json").read_text())["supervisor"]["pid"]
    os.kill(supervisor, signal.SIGKILL)
    c.proc.wait(30)
    t0 = time.monotonic()
    while any(running(p) for p in pids):
        assert time.monotonic() - t0 < 5, [p for p in pids if running(p)]
        time.sleep(0.05)
    took = time.monotonic() - t0
    print(f"kill -9: {len(pids)} processes gone {took:.2f} s after")
    assert Path("/run/netns", c.netns).exists(), "a killed supervisor cannot remove its namespace"

    c = start_cluster("hup")
    out = c.output()
    assert "cleaned up after the previous cluster" in out, out[:2000]
    assert f"removed the network namespace {c.netns} that a previous cluster left behind" in out, out[:2000]
    stop(c)
    assert not Path("/run/netns", c.netns).exists()
