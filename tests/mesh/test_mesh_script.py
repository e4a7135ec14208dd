"""`make mesh` itself (scripts/mesh.sh, debug builds, free ports): it starts one process per
rendered Deployment, Istio's control plane, the two Envoys and a Prometheus scraping the
processes as the chart's ServiceMonitors do (following upgrades); honours --set; takes a
live `upgrade` with no failed request; survives the shadow's death (logged by name);
refuses a second instance without touching the first; `make mesh-traffic` sends labelled
visitors through it; and on Ctrl-C (SIGINT to the process group, as a terminal sends it)
it prints a summary per version, stops every process it started and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import requests

from harness import OUT, ROOT, Load, poll, report, script_env, start_mesh
from smsdev.procs import children, listening, running

NAMES = {"app-service", "model-service", "istio-xds", "envoy", "prometheus"}


def descendants(pid: int) -> dict[int, str]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    kids, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent, comm in rows:
            if int(parent) == p and int(child) not in kids:
                kids[int(child)] = comm.strip()
                todo.append(int(child))
    return kids


def scraped(prom: str) -> dict:
    """The Prometheus' active targets: pod -> (job, namespace, health)."""
    targets = requests.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return {t["labels"]["pod"]: (t["labels"]["job"], t["labels"]["namespace"], t["health"]) for t in targets}


def split(gw: str, n: int) -> Counter:
    seen = Counter()
    host = {"Host": gw.split("//")[1].replace("127.0.0.1", "sms.localhost")}
    for i in range(n):  # a browser at sms.localhost, no cookie kept
        r = requests.post(f"{gw}/sms/", json={"sms": f"hello {i}"}, headers=host, timeout=10)
        assert r.status_code == 200, r.text
        seen[r.json()["app_version"]] += 1
    return seen


def test_mesh_script_runs_upgrades_survives_the_shadow_and_stops_what_it_started():
    run_dir = OUT / "mesh-script"
    env = script_env(run_dir)
    gw = f"http://127.0.0.1:{env['MESH_PORT']}"
    out = OUT / "mesh-script.out"
    proc = None
    kids: dict[int, str] = {}
    try:
        proc = start_mesh(env, out, "--set", "istio.canary.weights.stable=50", "--set", "istio.canary.weights.canary=50")
        banner = out.read_text(errors="replace")
        kids = {p: c for p, c in descendants(proc.pid).items() if c in NAMES}
        assert Counter(kids.values()) == {"app-service": 2, "model-service": 2, "istio-xds": 1, "envoy": 2,
                                          "prometheus": 1}, kids
        assert f"http://sms.localhost:{env['MESH_PORT']}/sms/" in banner
        # its Prometheus: in the banner, scraping the four processes with the ServiceMonitors' labels
        # and the gateway's Envoy with the PodMonitor's
        prom = f"http://127.0.0.1:{env['MESH_PROMETHEUS_PORT']}"
        assert prom in banner and "make experiment ARGS='--prometheus " + prom in banner, banner
        poll(lambda: len(scraped(prom)) == 5 and all(h == "up" for *_, h in scraped(prom).values()), 30,
             "the mesh's Prometheus scraping the four processes and the gateway")
        assert {(p.rsplit("-", 1)[0], job, ns) for p, (job, ns, _) in scraped(prom).items()} == {
            ("sms-app-app", "sms-app-app", "sms-app"), ("sms-app-app-canary", "sms-app-app", "sms-app"),
            ("sms-app-model", "sms-app-model", "sms-app"), ("sms-app-model-shadow", "sms-app-model", "sms-app"),
            # the gateway's Envoy, as the chart's PodMonitor scrapes it (job <namespace>/<name>)
            ("istio-ingressgateway", "sms-app/sms-app-gateway", "istio-system")}
        rules = requests.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"CanaryWorseThanStable", "ShadowDisagreementHigh"}
        seen = split(gw, 100)
        assert seen["v1"] > 20 and seen["v2"] > 20, seen  # the 50/50 of --set
        shadow = requests.get([line.split("metrics ")[1] for line in banner.splitlines()
                               if "sms-app-model-shadow" in line][0], timeout=5).text
        assert 'source="shadow"' in shadow  # the local mode turns the shadow on

        # make mesh-traffic finds the running mesh and sends labelled visitors through it
        tr = subprocess.run(["bash", "scripts/mesh-traffic.sh", "--count", "200", "--duration", "60", "--concurrency", "4"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert tr.returncode == 0, tr.stderr
        assert "mesh-traffic: 200 requests" in tr.stdout and "statuses: 200: 200" in tr.stdout, tr.stdout
        assert "app v1: " in tr.stdout and "app v2: " in tr.stdout and "saw both versions: 0" in tr.stdout, tr.stdout

        # a second one refuses, names the first, and touches nothing
        rendered = (run_dir / "rendered.yaml").read_text()
        logs = sorted(p.name for p in run_dir.glob("*.log"))
        second = subprocess.run(["bash", "scripts/mesh.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"pid {proc.pid}" in second.stderr and "already runs" in second.stderr, second.stderr
        assert (run_dir / "rendered.yaml").read_text() == rendered
        assert sorted(p.name for p in run_dir.glob("*.log")) == logs

        # a live upgrade under load: the canary switched off, then on again; no failed request
        load = Load(gw, env)
        try:
            for sets in (["istio.canary.enabled=false"], ["istio.canary.enabled=true"]):
                up = subprocess.run(["bash", "scripts/mesh.sh", "upgrade"] + [a for s in sets for a in ("--set", s)],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
                assert up.returncode == 0, up.stderr
                assert "pushed to the Envoys and acknowledged" in up.stdout, up.stdout
                if sets[0].endswith("=false"):
                    assert "stopped: sms-app-app-canary" in up.stdout, up.stdout
                    assert split(gw, 50) == {"v1": 50}
                    # Prometheus follows: the canary's process is no target any more
                    poll(lambda: not any(p.startswith("sms-app-app-canary-") for p in scraped(prom)), 15,
                         "Prometheus to drop the stopped canary")
                else:
                    assert "started: sms-app-app-canary" in up.stdout, up.stdout
                    poll(lambda: any(p.startswith("sms-app-app-canary-") and h == "up"
                                     for p, (*_, h) in scraped(prom).items()), 15,
                         "Prometheus to scrape the new canary process")
        finally:
            load.stop()
        assert load.total > 50 and not load.failures, \
            f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"

        # the shadow dies (kill -9): users see nothing, the log names it
        shadow_pid = int(next(line for line in banner.splitlines() if "sms-app-model-shadow" in line)
                         .split(" pid ")[1].split()[0])
        os.kill(shadow_pid, signal.SIGKILL)
        poll(lambda: "sms-app-model-shadow (model-service, pid" in out.read_text(errors="replace"), 10,
             "the supervisor to name the shadow's exit")
        seen = split(gw, 50)
        assert sum(seen.values()) == 50 and proc.poll() is None
        # the next upgrade brings it back, as Kubernetes would recreate the pod
        up = subprocess.run(["bash", "scripts/mesh.sh", "upgrade", "--set", "istio.canary.weights.stable=90",
                             "--set", "istio.canary.weights.canary=10"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
        assert up.returncode == 0 and "started: sms-app-model-shadow" in up.stdout, (up.stdout, up.stderr)
        assert sum(split(gw, 50).values()) == 50  # some of it mirrored to the new shadow, for the summary
    finally:
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        time.sleep(0.2)
        left = [k for k in kids if running(k)]
        for k in left:  # never leave them behind, but fail below
            os.kill(k, signal.SIGKILL)
    text = out.read_text(errors="replace")
    assert proc.returncode == 0, (proc.returncode, text[-2000:])
    summary = text.split("Summary (the processes' counters since they started):", 1)
    assert len(summary) == 2, text[-2000:]
    for line in ("app v1 (sms-app-app)", "app v2 (sms-app-app-canary)", "model v1 (app, sms-app-model)",
                 "model v2 (shadow, sms-app-model-shadow)", "agreement with serving model v1"):
        assert line in summary[1], summary[1]
    assert "error" not in text.split("Ctrl-C stops it", 1)[1].lower(), text[-2000:]
    assert not left, f"still running after Ctrl-C: {left}"


# -- nothing outlives it ------------------------------------------------------------------

def started(proc, run_dir) -> dict[int, str]:
    """The processes the supervisor started, by PID: its state file's, which must be its
    children in /proc (besides the stderr filter scripts/mesh.sh puts in front of it), one
    per kind `make mesh` runs."""
    recorded = {c["pid"]: c["name"] for c in json.loads((run_dir / "processes.json").read_text())["children"]}
    kids = children(proc.pid)
    assert set(recorded) <= kids, (recorded, kids)
    assert {Path(f"/proc/{k}/exe").resolve().name for k in kids - set(recorded)} <= {"grep"}, (recorded, kids)
    assert Counter(Path(f"/proc/{k}/exe").resolve().name for k in recorded) == {
        "app-service": 2, "model-service": 2, "istio-xds": 1, "envoy": 2, "prometheus": 1}, recorded
    return recorded


def held(pids) -> set[tuple[str, int]]:
    return {addr for addr, holders in listening().items() if holders & set(pids)}


def gone_within(pids, addrs: set, seconds: float = 5) -> float:
    """Seconds until none of `pids` runs and nobody listens on `addrs`; fails after `seconds`."""
    t0 = time.monotonic()
    while True:
        alive = [p for p in pids if running(p)]
        busy = addrs & set(listening())
        if not alive and not busy:
            return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"after {seconds:.1f} s still running: {alive}; still listening: {busy}")
        time.sleep(0.05)


def test_mesh_script_leaves_nothing_behind_when_its_terminal_closes_or_it_is_killed():
    run_dir = OUT / "mesh-exits"
    env = script_env(run_dir)
    procs = []
    try:
        # the terminal closes: SIGHUP to the foreground group; it stops in order, with the summary
        out = OUT / "mesh-exits-1.out"
        procs.append(proc := start_mesh(env, out))
        kids = started(proc, run_dir)
        addrs = held(kids)
        want = {int(env[k]) for k in ("MESH_PORT", "MESH_ADMIN_PORT", "MESH_SIDECAR_ADMIN_PORT", "MESH_XDS_PORT",
                                      "MESH_ISTIOD_PORT", "MESH_PROMETHEUS_PORT")}
        assert want <= {p for _, p in addrs}, (want, addrs)  # the recorded PIDs hold the ports
        os.killpg(proc.pid, signal.SIGHUP)
        t0 = time.monotonic()
        assert proc.wait(timeout=30) == 0, out.read_text(errors="replace")[-2000:]
        gone_within(kids, addrs, 5 - (time.monotonic() - t0))
        took = time.monotonic() - t0
        text = out.read_text(errors="replace")
        assert "Summary (the processes' counters since they started):" in text, text[-2000:]
        assert "stopped every process it started" in text, text[-2000:]
        report(f"make mesh, SIGHUP to its group: summary, exit 0; {len(kids)} processes gone and {len(addrs)} "
               f"listening sockets closed {took:.2f} s after the signal")

        # the supervisor is killed (kill -9, the OOM killer): its processes die with it, those
        # an upgrade started too (forked while a short-lived request thread served it)
        out = OUT / "mesh-exits-2.out"
        procs.append(proc := start_mesh(env, out, "--set", "istio.canary.enabled=false"))  # the next start: as the first
        assert "cleaned up" not in out.read_text(), out.read_text()
        up = subprocess.run(["bash", "scripts/mesh.sh", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0 and "started: sms-app-app-canary" in up.stdout, (up.stdout, up.stderr)
        time.sleep(1)  # the request's thread is gone: the canary it started runs on
        kids = started(proc, run_dir)
        addrs = held(kids) | held({proc.pid})
        os.kill(proc.pid, signal.SIGKILL)
        took = gone_within(kids, addrs)
        proc.wait(timeout=10)
        report(f"make mesh, kill -9 of the supervisor: {len(kids)} processes gone and {len(addrs)} listening "
               f"sockets closed {took:.2f} s after it")

        # the next start comes up and says what it cleaned
        out = OUT / "mesh-exits-3.out"
        procs.append(proc := start_mesh(env, out))
        text = out.read_text(errors="replace")
        assert f"cleaned up after the previous experiment (pid {procs[-2].pid})" in text, text[-3000:]
        assert "removed the stale" in text and "instance.json" in text, text[-3000:]
        kids = started(proc, run_dir)
        addrs = held(kids)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        gone_within(kids, addrs)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# -- the control plane's outage is no outage ----------------------------------------------

def test_the_experiment_keeps_serving_while_its_control_plane_is_killed():
    run_dir = OUT / "mesh-xds-outage"
    env = script_env(run_dir)
    gw = f"http://127.0.0.1:{env['MESH_PORT']}"
    out = OUT / "mesh-xds-outage.out"
    proc = None
    try:
        proc = start_mesh(env, out)
        xds = next(c["pid"] for c in json.loads((run_dir / "processes.json").read_text())["children"]
                   if c["name"] == "istio-xds")
        load = Load(gw, env, seconds=45, limit=40_000)
        try:
            time.sleep(2)
            before = load.total
            os.kill(xds, signal.SIGKILL)
            time.sleep(30)
            during = load.total - before
        finally:
            load.stop()
        assert load.total > 100 and not load.failures, \
            f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"
        text = out.read_text(errors="replace")
        assert (f"istio-xds (pid {xds}) exited with signal 9; the Envoys keep serving their last configuration"
                in text), text[-3000:]
        # started again, both Envoys connected to it (their retry back-off: seconds)
        poll(lambda: "istio-xds is back" in out.read_text(errors="replace"), 60, "istio-xds to be back")
        back = next(line for line in out.read_text(errors="replace").splitlines() if "istio-xds is back" in line)
        report(f"make mesh, kill -9 of istio-xds under steady load: {len(load.failures)} failed of {during} requests "
               f"in the 30 s after; {back.strip('= >')}")
        assert proc.poll() is None
        # and the control plane works again: a live upgrade is pushed and acknowledged
        up = subprocess.run(["bash", "scripts/mesh.sh", "upgrade", "--set", "istio.canary.weights.stable=100",
                             "--set", "istio.canary.weights.canary=0"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
        assert up.returncode == 0 and "pushed to the Envoys and acknowledged" in up.stdout, (up.stdout, up.stderr)
        assert split(gw, 20) == {"v1": 20}
    finally:
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, out.read_text(errors="replace")[-2000:]
