"""The local stack, described once: which binaries, the environment each gets, the ports,
and when each is ready. Every place that runs the services on this machine goes through
here: `make run` (this file's `run` command), `make bench`, `make mesh` (its supervisor,
istio/local/supervise.py, builds each rendered Deployment's process with `model`/`app`,
and its Prometheus with `prometheus`), and the ui, observability and mesh test suites.
Processes bind 127.0.0.1, log to a file each, and are stopped by their own PID (SIGTERM,
then SIGKILL); readiness is polled, never slept on. A supervisor's children (`make run`,
`make mesh`) die with it however it ends, even by SIGKILL (`die_with_parent`), and its run
state (`RunState`) lets the next start clean up after one that could not.

  python -m smsdev.stack run [--profile release] [--app-port 8080] [--model-port 8081]
                               [--metrics-port 9464] [--log-dir .cache/run]

Standard library only.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tooling/smsdev/stack.py, installed editable
_ports = random.Random()  # its own generator: a test seeding `random` must not pick the same ports
MODELS = ROOT / "models"


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    """A port free on 127.0.0.1 now, from below the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) can be taken again as the local port of any outgoing
    connection before the server binds it, and load tests open thousands (an Envoy of the
    mesh suite once failed with `Address already in use` that way)."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = _ports.randrange(10000, max(low, 10001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 10000 and the ephemeral range")


def poll(predicate, timeout: float, what: str = "condition", interval: float = 0.1):
    """Call predicate until it returns a truthy value; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exited:
            raise
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


class Exited(AssertionError):
    """A process that should be running has exited (polling stops at once)."""


# A child of a supervisor dies with it, however the supervisor ends (SIGKILL, the OOM killer
# included): Linux's parent-death signal, set in the child between fork and exec. Not in a
# preexec_fn (unsafe once the parent has threads, and every supervisor has): the child runs
# this small launcher, which sets it, checks that the parent did not die before it was set
# (the launcher would then belong to init and never get the signal), and execs the real
# program, so the PID the supervisor holds is the process that holds the ports (the
# signal survives execve; none of the stack's programs is setuid or forks a server).
_LAUNCH = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0) != 0:\n"  # PR_SET_PDEATHSIG
    "    sys.exit(f'prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}')\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)\n"  # its parent is already gone: do not start at all
    "os.execv(sys.argv[3], sys.argv[3:])\n")


class _Spawner:
    """The parent-death signal fires when the *thread* that forked the child ends, not the
    process: a child started from a short-lived thread (an HTTP handler serving
    `scripts/mesh.sh upgrade`) would be killed when that request is answered. So every such
    child is forked by this one thread, which lives as long as the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: list = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def call(self, fn):
        if threading.current_thread() is self._thread:
            return fn()
        done: Future = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="child-spawner", daemon=True)
                self._thread.start()
            self._jobs.append((fn, done))
            self._wake.notify()
        return done.result()

    def _loop(self):
        while True:
            with self._lock:
                while not self._jobs:
                    self._wake.wait()
                fn, done = self._jobs.pop(0)
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_spawner = _Spawner()


def proc_start_time(pid: int) -> int | None:
    """The process' start time (clock ticks since boot, /proc/PID/stat field 22): with the
    PID, it names one process, never a later one that got the same PID."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Proc:
    """A child process with its output in `log_dir/<name>.log`, stopped by PID."""

    def __init__(self, name: str, cmd: list, log_dir: Path, env: dict | None = None,
                 cwd: Path | None = None, append: bool = False, new_session: bool = False,
                 output_to_pipe: bool = False, die_with_parent: bool = False, state: "RunState | None" = None):
        """`new_session`: out of the caller's process group, so a Ctrl-C to the group reaches
        only the caller, which then stops its children in order (the supervisors); it is
        then stopped as a group (anything it forked goes too).
        `output_to_pipe`: output into `popen.stdout`, a pipe the caller reads (or, to play a
        stalled log shipper, does not), instead of the log file.
        `die_with_parent`: SIGKILLed by the kernel when this process ends, however it ends.
        `state`: recorded there (PID and start time) while it runs."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.expected_exit = False  # set once the owner asked it to stop
        self.group = new_session
        self._log = open(self.log_path, "ab" if append else "wb")
        argv = [str(c) for c in cmd]
        popen = lambda: subprocess.Popen(  # noqa: E731
            argv, stdout=subprocess.PIPE if output_to_pipe else self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
            cwd=str(cwd or ROOT), start_new_session=new_session)
        if die_with_parent:
            exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
            if not exe or not os.access(exe, os.X_OK):
                raise FileNotFoundError(f"{argv[0]}: no such program")
            argv = [sys.executable, "-I", "-S", "-c", _LAUNCH, str(os.getpid()), str(int(signal.SIGKILL)),
                    exe, *argv[1:]]
            self.popen = _spawner.call(popen)
        else:
            self.popen = popen()
        self.pid = self.popen.pid
        self.started = proc_start_time(self.pid)
        self.state = state
        if state:
            state.record(self)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int):
        """To the process (and its process group when it has its own), while it is not
        reaped: until then its PID, and the group's, can name no other process."""
        if self.popen.poll() is None:
            try:
                (os.killpg if self.group else os.kill)(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        """SIGTERM without waiting (stop several at once, then `stop` each)."""
        self.expected_exit = True
        self.signal(signal.SIGTERM)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def check_alive(self):
        if not self.alive():
            raise Exited(f"{self.name} exited with {self.popen.returncode}; last lines of its log:\n{self.tail()}")

    def stop(self, timeout: float = 10):
        self.expected_exit = True
        if self.popen.poll() is None:
            try:
                self.signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        if self.group:  # anything it forked and left behind (none of the stack's programs does)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()
        if self.state:
            self.state.forget(self)


class ProcGroup:
    """Starts processes and stops every one of them (last started first). A supervisor's
    group (`supervised`): each in a session of its own, dying with this process, recorded
    in `state`."""

    def __init__(self, log_dir: Path, supervised: bool = False, state: "RunState | None" = None):
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.supervised, self.state = supervised, state

    def start(self, name, cmd, env=None, cwd=None, append=False, output_to_pipe=False) -> Proc:
        p = Proc(name, cmd, self.log_dir, env=env, cwd=cwd, append=append, output_to_pipe=output_to_pipe,
                 new_session=self.supervised, die_with_parent=self.supervised, state=self.state)
        self.procs.append(p)
        return p

    def stop_all(self):
        errors = []
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                errors.append(f"{p.name}: {exc!r}")
        self.procs.clear()
        assert not errors, f"could not stop: {errors}"


class RunState:
    """A supervisor's run directory: `lock` (held while it runs: one at a time) and
    `processes.json` (its PID and every child's PID, start time and process group, kept
    current). A supervisor that stops in order removes the file; one that could not (kill
    -9, the OOM killer) leaves it, and the next start stops whatever of the old run is still
    there (its children die with it, so normally nothing) and says what it cleaned."""

    def __init__(self, directory: Path, what: str):
        self.dir, self.what = directory, what
        self.path = directory / "processes.json"
        self._lockf = None
        self._mutex = threading.Lock()
        self._children: dict[int, dict] = {}

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def lock(self) -> bool:
        """Take the run directory (False: a running supervisor holds it; `read()` names it).
        The lock goes with the process, however it ends."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._lockf = f
        return True

    @staticmethod
    def survivors(children: list[dict]) -> dict[int, str]:
        """The processes of these children still there: the child itself (same PID and
        start time) and anything left in its process group (started after it)."""
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid, state, pgid, start = int(entry.name), rest[0], int(rest[2]), int(rest[19])
            if state == "Z":
                continue
            for c in children:
                if (pid == c["pid"] and start == c["start"]) or (c.get("group") and pgid == c["pid"] and start >= c["start"]):
                    out[pid] = c["name"]
        return out

    def clean(self) -> list[str]:
        """After `lock()`: what a previous run that did not stop in order left behind,
        stopped (SIGKILL), and its state file removed. The lines say what was done."""
        if not self.path.exists():
            self._write()
            return []
        old = self.read()
        sup = old.get("supervisor") or {}
        children = old.get("children") or []
        left = self.survivors(children)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.survivors(children):
            time.sleep(0.05)
        self._write()
        names = ", ".join(f"{n} (pid {p})" for p, n in sorted(left.items()))
        return [f"cleaned up after the previous {self.what} (pid {sup.get('pid', '?')}), which ended without "
                f"stopping in order: " + (f"stopped what was left of it: {names}" if left else
                                          f"none of its {len(children)} processes was still running")
                + f"; cleared its stale {self.path.name}"]

    def _write(self):
        data = {"supervisor": {"pid": os.getpid(), "start": proc_start_time(os.getpid())},
                "children": sorted(self._children.values(), key=lambda c: c["pid"])}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.path)

    def record(self, proc: Proc):
        with self._mutex:
            self._children[proc.pid] = {"name": proc.name, "pid": proc.pid, "start": proc.started,
                                        "group": proc.group}
            self._write()

    def forget(self, proc: Proc):
        with self._mutex:
            if self._children.pop(proc.pid, None) is not None:
                self._write()

    def release(self):
        """Stopped in order: no state left behind, and the lock given back."""
        with self._mutex:
            self._children.clear()
            self.path.unlink(missing_ok=True)
        if self._lockf:
            self._lockf.close()
            self._lockf = None


def children(pid: int) -> set[int]:
    """The PIDs whose parent is `pid` (every thread's children: the kernel lists them per
    thread, by the thread that forked them)."""
    out = set()
    for t in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out |= {int(c) for c in t.read_text().split()}
        except OSError:
            pass
    return out


def running(pid: int) -> bool:
    """The process exists and is no zombie (a killed child waits for its new parent to reap
    it, but it holds nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def listening() -> dict[tuple[str, int], set[int]]:
    """Every listening TCP socket (IPv4) of this machine's network namespace: (address,
    port) -> the PIDs holding it (those this user can see)."""
    socks: dict[str, tuple[str, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A":  # LISTEN
            ip, port = f[1].split(":")
            socks[f[9]] = (socket.inet_ntoa(bytes.fromhex(ip)[::-1]), int(port, 16))
    out: dict[tuple[str, int], set[int]] = {a: set() for a in socks.values()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in socks:
                    out[socks[link[8:-1]]].add(int(proc.name))
        except OSError:
            continue
    return out


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


# --------------------------------------------------------------------------- the services

def binary(name: str, profile: str = "debug") -> Path:
    """A service binary from the cargo build the caller made (debug for tests), or a tool's
    absolute path as `tool` gives it."""
    if Path(name).is_absolute():
        return Path(name)
    path = ROOT / "target" / profile / name
    assert path.is_file() and os.access(path, os.X_OK), (
        f"{path.relative_to(ROOT)} is missing: build it with "
        f"`cargo build {'--release ' if profile == 'release' else ''}-p model-service -p app-service`")
    return path


@dataclass
class Service:
    """One process of the stack: its binary (and arguments), environment, and the URL that
    answers 200 once it is ready."""
    name: str
    binary: str
    env: dict
    ready_url: str
    addresses: dict = field(default_factory=dict)
    args: list = field(default_factory=list)


def model(name: str = "model", *, grpc: str, metrics: str, version: str = "v1", source: str = "app",
          model_root: Path = MODELS, http: str = "127.0.0.1:0", **env) -> Service:
    """A model service. Its metrics port opens only after the model is loaded and warmed,
    so the metrics page answering means it serves. `http`: the Open Inference Protocol's
    HTTP port (a free one unless given)."""
    return Service(name, "model-service", {
        "GRPC_ADDR": grpc, "METRICS_ADDR": metrics, "INFERENCE_HTTP_ADDR": http, "MODEL_ROOT": str(model_root),
        "MODEL_VERSION": version, "METRICS_SOURCE": source, **env,
    }, f"http://{metrics}/metrics", {"grpc": grpc, "metrics": f"http://{metrics}/metrics", "inference": f"http://{http}/v2"})


def app(name: str = "app", *, http: str, model_host: str, version: str = "v1", cache: bool = False,
        wait_for_model: bool = True, **env) -> Service:
    """An app service. Ready means /readyz (the model tier answers its health check);
    with wait_for_model=False, /livez (for an app whose model is down on purpose)."""
    return Service(name, "app-service", {
        "HTTP_ADDR": http, "MODEL_HOST": model_host, "APP_VERSION": version,
        "CACHE_ENABLED": "true" if cache else "false", **env,
    }, f"http://{http}/{'readyz' if wait_for_model else 'livez'}",
        {"url": f"http://{http}", "ui": f"http://{http}/sms/", "metrics": f"http://{http}/metrics"})


# --------------------------------------------------------------------------- Prometheus

NAMESPACE = "sms-app"  # the chart's release namespace, as the scrape adds it


def tool(name: str) -> str:
    """Path of an installed program (Prometheus from Debian's package: the scripts that need
    it run `apt_ensure prometheus`); a missing one is an error that says so."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: the scripts that use it install it (apt_ensure {name} in scripts/lib.sh)"
    return path


def scrape_config(targets: list[dict], interval: str = "1s", rule_files: list = ()) -> dict:
    """A Prometheus configuration equivalent to the chart's ServiceMonitors.

    The operator's ServiceMonitor makes job = the Service's name and adds namespace, pod,
    service and endpoint; a static config with the same labels gives the same series.
    `targets` items: {job, address, pod, endpoint} and optionally namespace (default
    NAMESPACE). The services label their own series with version (and source).
    """
    jobs: dict[str, list] = {}
    for t in targets:
        jobs.setdefault(t["job"], []).append({
            "targets": [t["address"]],
            "labels": {"namespace": t.get("namespace", NAMESPACE), "pod": t["pod"], "service": t["job"],
                       "endpoint": t["endpoint"]},
        })
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics", "scheme": "http",
                            "static_configs": cfgs} for job, cfgs in jobs.items()],
    }
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    return config


def write_config(path: Path, config: dict) -> Path:
    """Writes a Prometheus configuration or rule file (JSON is YAML), replacing the old one
    in one step (a reload never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
    return path


def prometheus(name: str = "prometheus", *, listen: str, workdir: Path, config: dict,
               retention: str = "1h", log_level: str = "info", args: tuple = ()) -> Service:
    """A real Prometheus (Debian's package) with this configuration (written to
    `workdir/prometheus.yml`; SIGHUP re-reads it) and its data in `workdir/data`. Ready when
    `/-/ready` answers 200."""
    cfg = write_config(workdir / "prometheus.yml", config)
    return Service(name, tool("prometheus"), {}, f"http://{listen}/-/ready", {"url": f"http://{listen}"}, [
        f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={listen}",
        f"--storage.tsdb.retention.time={retention}", f"--log.level={log_level}", *args])


class Stack(ProcGroup):
    """Starts services and waits until each is ready (failing with its log if it exits)."""

    def __init__(self, log_dir: Path, profile: str = "debug", append_logs: bool = False, supervised: bool = False,
                 state: RunState | None = None):
        super().__init__(log_dir, supervised, state)
        self.profile = profile
        self.append_logs = append_logs

    def launch(self, service: Service, env: dict | None = None, output_to_pipe: bool = False) -> Proc:
        """Starts `service` (plus `env`) without waiting for it."""
        return self.start(service.name, [binary(service.binary, self.profile), *service.args],
                          env={**service.env, **(env or {})}, append=self.append_logs, output_to_pipe=output_to_pipe)

    def up(self, service: Service, env: dict | None = None, timeout: float = 90, interval: float = 0.1,
           output_to_pipe: bool = False) -> Proc:
        """Starts `service` and returns once it is ready (polled every `interval` s)."""
        proc = self.launch(service, env, output_to_pipe)
        self.wait_ready(service, proc, timeout, interval)
        return proc

    @staticmethod
    def wait_ready(service: Service, proc: Proc, timeout: float = 90, interval: float = 0.1):
        def ready():
            proc.check_alive()
            return http_ok(service.ready_url)
        poll(ready, timeout, what=f"{service.name} ready ({service.ready_url})", interval=interval)


# --------------------------------------------------------------------------- make run

def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="stack.py run", description="model v1 and the app, until Ctrl-C")
    p.add_argument("--profile", default="release", choices=["release", "debug"])
    p.add_argument("--app-port", type=int, default=8080)
    p.add_argument("--model-port", type=int, default=8081)
    p.add_argument("--metrics-port", type=int, default=9464)
    p.add_argument("--inference-port", type=int, default=8082)
    p.add_argument("--log-dir", type=Path, default=ROOT / ".cache" / "run")
    p.add_argument("--grpcurl", default="grpcurl", help="the grpcurl to show in the example command")
    a = p.parse_args(argv)

    m = model(grpc=f"127.0.0.1:{a.model_port}", metrics=f"127.0.0.1:{a.metrics_port}",
              http=f"127.0.0.1:{a.inference_port}")
    w = app(http=f"127.0.0.1:{a.app_port}", model_host=f"http://127.0.0.1:{a.model_port}")
    state = RunState(a.log_dir, "`make run`")
    if not state.lock():
        other = state.read().get("supervisor") or {}
        print(f"error: `make run` already runs from {os.path.relpath(a.log_dir, Path.cwd())}/ (pid "
              f"{other.get('pid', '?')}); stop it with Ctrl-C in its terminal. Nothing was changed.", file=sys.stderr)
        return 1
    for line in state.clean():
        say(line)
    # Each child in a session of its own: the terminal's signals reach only this process,
    # which stops them in order; and each dies with this process however it ends.
    stack = Stack(a.log_dir, a.profile, supervised=True, state=state)
    stopping = False
    running = False

    class Interrupted(Exception):
        pass

    def on_signal(*_):
        nonlocal stopping
        stopping = True
        if not running:  # still starting: stop waiting for readiness at once
            raise Interrupted()

    # SIGHUP: the terminal was closed (or the session ended); stop as for Ctrl-C
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        for s in (m, w):
            stack.up(s)
        logs = os.path.relpath(a.log_dir, Path.cwd())
        running = True
        say(f"""
  SMS spam detection is running (Ctrl-C stops it; logs in {logs}/):
    web UI        {w.addresses['ui']}
    app metrics   {w.addresses['metrics']}
    model gRPC    {m.addresses['grpc']}   e.g.
      {a.grpcurl} -plaintext -d '{{"text":"WIN a free prize now!"}}' {m.addresses['grpc']} sms.v1.SpamClassifier/Classify
    model metrics {m.addresses['metrics']}
    model Open Inference Protocol: gRPC inference.GRPCInferenceService on {m.addresses['grpc']}, HTTP {m.addresses['inference']}
      curl -d '{{"inputs":[{{"name":"text","shape":[1],"datatype":"BYTES","data":["WIN a free prize now!"]}}]}}' {m.addresses['inference']}/models/sms-spam/infer
""", sys.stdout)
        while not stopping:
            for proc in stack.procs:
                if not proc.alive():
                    say(f"error: {proc.name} exited with {proc.popen.returncode}; last lines of "
                        f"{os.path.relpath(proc.log_path, Path.cwd())}:\n{proc.tail(10)}")
                    return 1
            time.sleep(0.2)
        return 0
    except Interrupted:
        return 0
    except AssertionError as err:
        say(f"error: {err}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stack.stop_all()
        state.release()
        say("stopped")


def say(text: str, stream=None) -> None:
    """A line for the user. The terminal may be gone (closed: SIGHUP, then EIO on write):
    nothing a supervisor prints may keep it from stopping its processes."""
    try:
        print(text, file=stream or sys.stderr, flush=True)
    except OSError:
        pass


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.exit(__doc__)
    sys.exit(run(sys.argv[2:]))
