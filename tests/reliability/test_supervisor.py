"""`make run` (scripts/run-local.sh, then `python -m smsdev.run`) leaves nothing behind:
closing its terminal (SIGHUP to the process group) stops it in order, as Ctrl-C
does; `kill -9` of the supervisor takes every process it started with it (the kernel's
parent-death signal); either way no process it started is alive and every port it held is
free within 5 s, and the next start comes up normally (after a kill -9, saying what it
cleaned). Processes are followed by PID (the supervisor's children in /proc, which must be
the ones its processes.json records), never by name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from conftest import OUT, ROOT, figure
from smsdev.procs import children, free_port, listening, poll, running


def start(run_dir, ports: dict, out):
    """`make run`'s script (debug builds, these ports, this run directory) in a process group
    of its own, as a terminal runs it; returns once the banner is printed."""
    env = {**os.environ, "RUN_PROFILE": "debug", "RUN_DIR": str(run_dir), **{k: str(v) for k, v in ports.items()}}
    log = open(out, "wb")
    proc = subprocess.Popen(["bash", "scripts/run-local.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    try:
        poll(lambda: proc.poll() is None and "is running" in out.read_text(errors="replace"), 300,
                   "scripts/run-local.sh to print its banner")
    except AssertionError:
        kill(proc)
        raise AssertionError(out.read_text(errors="replace")[-3000:])
    return proc


def kill(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def started(proc, run_dir) -> dict[int, str]:
    """The processes the supervisor started: its children, checked against its state file,
    each holding the ports of its service."""
    recorded = {c["pid"]: c["name"] for c in json.loads((run_dir / "processes.json").read_text())["children"]}
    assert sorted(recorded.values()) == ["app", "model"], recorded
    assert children(proc.pid) == set(recorded), (children(proc.pid), recorded)
    return recorded


def held(pids) -> set[tuple[str, int]]:
    return {addr for addr, holders in listening().items() if holders & set(pids)}


def gone_within(pids, ports: set, seconds: float = 5) -> float:
    """Seconds until none of `pids` runs and nobody listens on `ports`; fails after `seconds`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        alive = [p for p in pids if running(p)]
        busy = ports & set(listening())
        if not alive and not busy:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"after {seconds} s still running: {alive}; ports still held: {busy}")


def test_make_run_leaves_nothing_behind_when_its_terminal_closes_or_it_is_killed():
    run_dir = OUT / "make-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    ports = {"APP_PORT": free_port(), "MODEL_PORT": free_port(), "MODEL_METRICS_PORT": free_port(),
             "MODEL_INFERENCE_PORT": free_port()}
    procs = []
    try:
        # the terminal closes: SIGHUP to the whole foreground group, as the kernel sends it
        out = OUT / "make-run-1.out"
        procs.append(proc := start(run_dir, ports, out))
        kids = started(proc, run_dir)
        addrs = held(kids)
        assert {p for _, p in addrs} == set(ports.values()), addrs  # the recorded PIDs hold every port
        os.killpg(proc.pid, signal.SIGHUP)
        t0 = time.monotonic()
        assert proc.wait(timeout=30) == 0, out.read_text(errors="replace")[-2000:]
        took = gone_within(kids, addrs, 5 - (time.monotonic() - t0))
        assert out.read_text().rstrip().endswith("stopped"), out.read_text()[-2000:]
        assert not (run_dir / "processes.json").exists()
        figure(f"make run, SIGHUP to its group: stopped in order, exit 0; {len(kids)} processes gone and "
               f"{len(addrs)} ports free {time.monotonic() - t0:.2f} s after the signal")

        # the supervisor is killed: nothing it can do; its processes die with it
        out = OUT / "make-run-2.out"
        procs.append(proc := start(run_dir, ports, out))  # the next start after a hangup: as the first
        assert "cleaned up" not in out.read_text(), out.read_text()
        kids = started(proc, run_dir)
        addrs = held(kids)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        took = gone_within(kids, addrs)
        figure(f"make run, kill -9 of the supervisor: {len(kids)} processes gone and {len(addrs)} ports free "
               f"{took:.2f} s after it")
        proc.wait(timeout=10)
        dead = proc.pid

        # the next start comes up and says what it cleaned
        out = OUT / "make-run-3.out"
        procs.append(proc := start(run_dir, ports, out))
        text = out.read_text()
        assert f"cleaned up after the previous `make run` (pid {dead})" in text, text
        kids = started(proc, run_dir)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
        gone_within(kids, held(kids) | {("127.0.0.1", p) for p in ports.values()})
    finally:
        for p in procs:
            kill(p)
