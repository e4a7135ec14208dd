"""`make mesh` (scripts/mesh.sh): the local experiment's command line and its run, from
the start to the summary. What runs is smsdev.mesh.supervisor's LocalMesh; see
docs/mesh.md.

  python -m smsdev.mesh run [--set K=V]... [-f values.yaml]...      start, print the banner, supervise
  python -m smsdev.mesh upgrade [--set K=V]... [-f values.yaml]...  re-render and push to the running one

`upgrade` works like `helm upgrade` without --reuse-values: the values given replace the
previous ones (the local mode's defaults still apply); smsdev.mesh.control carries it to
the running experiment, which brings its processes and Istio's configuration to them with
no failed request.

One instance per run directory (MESH_DIR; a lock: a second one names the first and
touches nothing). Ctrl-C, SIGTERM or SIGHUP (the terminal closed) prints a short summary
per version (from the processes' metrics pages), stops every process this supervisor
started, by PID, and exits 0; only an Envoy exiting stops the experiment otherwise (exit
1). Every process it starts dies with it even when it is killed (kill -9, the OOM killer:
Linux's parent-death signal), and the next start cleans up after such a run and says so.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from smsdev import ROOT
from smsdev.console import log, say
from smsdev.mesh import banner, control, instance
from smsdev.mesh.plan import LOCAL_DEFAULTS
from smsdev.mesh.ports import Ports, port_free
from smsdev.mesh.supervisor import LocalMesh
from smsdev.runstate import RunState


def values_args(argv: list[str]) -> list[str]:
    """helm's --set and -f arguments, the files relative to where the user is (MESH_CWD)."""
    out = []
    it = iter(argv)
    for a in it:
        if a in ("--set", "-f", "--values"):
            try:
                out += [a if a == "--set" else "-f", next(it)]
            except StopIteration:
                raise SystemExit(f"error: {a} needs a value")
        elif a.startswith("--set="):
            out += ["--set", a[len("--set="):]]
        else:
            raise SystemExit(f"error: unknown argument {a} (use --set KEY=VALUE or -f values.yaml)")
    cwd = os.environ.get("MESH_CWD", os.getcwd())
    return [os.path.join(cwd, x) if prev == "-f" else x for prev, x in zip([""] + out, out)]


def cmd_run(args: list[str], run: Path) -> int:
    state = RunState(run, "experiment")
    if not state.lock():
        other = instance.read(run) or {}
        print(f"error: the experiment already runs from {run} (pid {other.get('pid', '?')}, "
              f"gateway {other.get('gateway', '?')}, values: {' '.join(other.get('values', []))}); "
              "change it with `scripts/mesh.sh upgrade --set ...` or stop it (Ctrl-C in its terminal). "
              "Nothing was changed.", file=sys.stderr)
        return 1
    # a previous supervisor that could not stop in order (kill -9, the OOM killer): its
    # processes died with it; stop anything left of it, before the ports are checked
    for line in state.clean():
        log(line)
    if instance.read(run):
        instance.remove(run)
        log(f"removed the stale {instance.path(run)} of that run")
    ports = Ports.from_env()
    busy = [f"{k} {v}" for k, v in vars(ports).items() if isinstance(v, int) and k in
            ("gateway", "gateway_admin", "sidecar_admin", "xds", "istiod", "control", "prometheus")
            and not port_free(v)]
    if not port_free(ports.xds, ports.vip) or busy:
        print(f"error: ports in use: {', '.join(busy) or ports.vip}; another program (or an experiment from "
              "another directory) holds them. Set MESH_PORT, MESH_ADMIN_PORT, ... (docs/mesh.md).", file=sys.stderr)
        return 1
    for f in run.glob("*.log"):
        f.unlink()
    profile = os.environ.get("MESH_PROFILE", "release")
    mesh = LocalMesh(run, ports, ROOT / "target" / profile, Path(os.environ["ISTIO_XDS_DIR"]),
                     os.environ["ENVOY_BIN"], extra_env=dict(e.split("=", 1) for e in
                                                             os.environ.get("MESH_EXTRA_ENV", "").split() if e),
                     prometheus=True, scrape_interval=os.environ.get("MESH_SCRAPE_INTERVAL", "2s"), state=state)
    stopping = threading.Event()

    running = threading.Event()

    class Interrupted(Exception):
        pass

    def on_signal(signum, _frame):
        stopping.set()
        if not running.is_set():  # still starting: stop waiting for readiness at once
            raise Interrupted()

    # SIGHUP: the terminal was closed (or the session ended); stop as for Ctrl-C
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    server = None
    try:
        log(f"starting: values {' '.join(LOCAL_DEFAULTS + args)}")
        mesh.start(args)

        def record():  # for `upgrade` and for a second instance's message: the values in force
            instance.write(run, os.getpid(), f"http://127.0.0.1:{ports.control}",
                           f"http://sms.localhost:{ports.gateway}/sms/", mesh.prometheus_url,
                           LOCAL_DEFAULTS + mesh.args)

        record()
        server = control.serve(mesh, ports.control, record)
        say(banner.banner(mesh), sys.stdout)
        running.set()
        while not stopping.wait(0.3):
            reason = mesh.check()
            if reason:
                log(f"stopping: {reason}")
                return 1
        return 0
    except Interrupted:
        return 0
    except RuntimeError as err:
        if not stopping.is_set():
            log(f"error: {err}")
            return 1
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        if server:
            server.shutdown()
        instance.remove(run)
        if running.is_set():
            try:
                say(banner.summary(mesh), sys.stdout)
            except Exception as err:  # noqa: BLE001 - stopping matters more than the summary
                log(f"no summary: {err!r}")
        mesh.stop()
        state.release()
        log(f"stopped every process it started (logs in {run}/)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "upgrade"):
        print(__doc__, file=sys.stderr)
        return 2
    run = instance.run_dir()
    args = values_args(argv[1:])
    if argv[0] == "run":
        return cmd_run(args, run)
    return control.upgrade(args, run)


if __name__ == "__main__":
    sys.exit(main())
