"""`make mesh` itself (scripts/mesh.sh, debug builds, free ports): it starts one process per
rendered Deployment, Istio's control plane, the two Envoys and a Prometheus scraping the
processes as the chart's ServiceMonitors do (following upgrades); honours --set; takes a
live `upgrade` with no failed request; survives the shadow's death (logged by name);
refuses a second instance without touching the first; `make mesh-traffic` sends labelled
visitors through it; and on Ctrl-C (SIGINT to the process group, as a terminal sends it)
it prints a summary per version, stops every process it started and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter

import requests

from harness import OUT, ROOT, free_port, poll, mesh_ports

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


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def script_env(run_dir) -> dict:
    p = mesh_ports()
    ports = dict(MESH_PORT=p.gateway, MESH_ADMIN_PORT=p.gateway_admin, MESH_SIDECAR_ADMIN_PORT=p.sidecar_admin,
                 MESH_XDS_PORT=p.xds, MESH_ISTIOD_PORT=p.istiod, MESH_CONTROL_PORT=p.control,
                 MESH_APP_PORT=free_port(), MESH_MODEL_PORT=free_port(), MESH_METRICS_PORT=free_port(),
                 MESH_PROMETHEUS_PORT=p.prometheus)
    return {**os.environ, **{k: str(v) for k, v in ports.items()}, "MESH_VIP": p.vip,
            "MESH_PROFILE": "debug", "MESH_DIR": str(run_dir), "MESH_EXTRA_ENV": "INFERENCE_WORKERS=1 RUST_LOG=warn",
            "MESH_SCRAPE_INTERVAL": "1s"}


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
    log = open(out, "wb")
    # its own process group, so SIGINT reaches it as Ctrl-C does
    proc = subprocess.Popen(
        ["bash", "scripts/mesh.sh", "--set", "istio.canary.weights.stable=50", "--set", "istio.canary.weights.canary=50"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    kids: dict[int, str] = {}
    try:
        poll(lambda: proc.poll() is None and "Ctrl-C stops it" in out.read_text(errors="replace"), 300,
             "scripts/mesh.sh to print its banner")
        banner = out.read_text(errors="replace")
        kids = {p: c for p, c in descendants(proc.pid).items() if c in NAMES}
        assert Counter(kids.values()) == {"app-service": 2, "model-service": 2, "istio-xds": 1, "envoy": 2,
                                          "prometheus": 1}, kids
        assert f"http://sms.localhost:{env['MESH_PORT']}/sms/" in banner
        # its Prometheus: in the banner, scraping the four processes with the ServiceMonitors' labels
        prom = f"http://127.0.0.1:{env['MESH_PROMETHEUS_PORT']}"
        assert prom in banner and "make experiment ARGS='--prometheus " + prom in banner, banner
        poll(lambda: len(scraped(prom)) == 4 and all(h == "up" for *_, h in scraped(prom).values()), 30,
             "the mesh's Prometheus scraping the four processes")
        assert {(p.rsplit("-", 1)[0], job, ns) for p, (job, ns, _) in scraped(prom).items()} == {
            ("sms-app-app", "sms-app-app", "sms-app"), ("sms-app-app-canary", "sms-app-app", "sms-app"),
            ("sms-app-model", "sms-app-model", "sms-app"), ("sms-app-model-shadow", "sms-app-model", "sms-app")}
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

        # a live upgrade under load: rollback to 100/0, then 90/10 again; no failed request
        failures, total, stop = [], [0], threading.Event()

        def load():
            s = requests.Session()
            while not stop.is_set():
                s.cookies.clear()
                try:
                    r = s.post(f"{gw}/sms/", json={"sms": "load"}, timeout=10,
                               headers={"Host": f"sms.localhost:{env['MESH_PORT']}"})
                    if r.status_code != 200:
                        # when, and who answered: Envoy adds its upstream time only to an upstream's
                        # answer; the body is Envoy's own text or the app's JSON error
                        failures.append(f"{time.strftime('%H:%M:%S')} {r.status_code} "
                                        f"{r.headers.get('x-envoy-upstream-service-time', 'no upstream time')} "
                                        f"{r.text[:120]!r}")
                except requests.RequestException as e:
                    failures.append(repr(e))
                total[0] += 1

        t = threading.Thread(target=load)
        t.start()
        try:
            for sets in (["istio.canary.weights.stable=100", "istio.canary.weights.canary=0"],
                         ["istio.canary.weights.stable=90", "istio.canary.weights.canary=10"]):
                up = subprocess.run(["bash", "scripts/mesh.sh", "upgrade"] + [a for s in sets for a in ("--set", s)],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
                assert up.returncode == 0, up.stderr
                assert "pushed to the Envoys and acknowledged" in up.stdout, up.stdout
                if sets[1].endswith("=0"):
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
            stop.set()
            t.join()
        assert total[0] > 50 and not failures, f"{len(failures)} of {total[0]} requests failed: {failures[:5]}"

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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
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
