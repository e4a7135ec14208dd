"""The local stack, described once: which binaries, the environment each gets, the ports,
and when each is ready. Every place that runs the services on this machine goes through
here: `make run` (this file's `run` command), `make bench`, `make mesh` (its supervisor,
istio/local/supervise.py, builds each rendered Deployment's process with `model`/`app`,
and its Prometheus with `prometheus`), and the ui, observability and mesh test suites.
Processes bind 127.0.0.1, log to a file each, and are stopped by their own PID (SIGTERM,
then SIGKILL); readiness is polled, never slept on.

  python3 scripts/stack.py run [--profile release] [--app-port 8080] [--model-port 8081]
                               [--metrics-port 9464] [--log-dir .cache/run]

Standard library only, so the task runner needs no virtualenv to use it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


class Proc:
    """A child process with its output in `log_dir/<name>.log`, stopped by PID."""

    def __init__(self, name: str, cmd: list, log_dir: Path, env: dict | None = None,
                 cwd: Path | None = None, append: bool = False, new_session: bool = False,
                 output_to_pipe: bool = False):
        """`new_session`: out of the caller's process group, so a Ctrl-C to the group reaches
        only the caller, which then stops its children in order (the mesh supervisor).
        `output_to_pipe`: output into `popen.stdout`, a pipe the caller reads (or, to play a
        stalled log shipper, does not), instead of the log file."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.expected_exit = False  # set once the owner asked it to stop
        self._log = open(self.log_path, "ab" if append else "wb")
        self.popen = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE if output_to_pipe else self._log,
                                      stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                      cwd=str(cwd or ROOT), start_new_session=new_session)
        self.pid = self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def terminate(self):
        """SIGTERM without waiting (stop several at once, then `stop` each)."""
        self.expected_exit = True
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

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
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()


class ProcGroup:
    """Starts processes and stops every one of them (last started first)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name, cmd, env=None, cwd=None, append=False, output_to_pipe=False) -> Proc:
        p = Proc(name, cmd, self.log_dir, env=env, cwd=cwd, append=append, output_to_pipe=output_to_pipe)
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


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def samples(text: str):
    """(name, labels, value) of every sample of a Prometheus text page."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        yield m.group(1), dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or "")), float(m.group(4))


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` (Prometheus text format) whose labels include `labels`."""
    return sum(v for n, have, v in samples(text)
               if n == name and all(have.get(k) == want for k, want in labels.items()))


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
          model_root: Path = MODELS, **env) -> Service:
    """A model service. Its metrics port opens only after the model is loaded and warmed,
    so the metrics page answering means it serves."""
    return Service(name, "model-service", {
        "GRPC_ADDR": grpc, "METRICS_ADDR": metrics, "MODEL_ROOT": str(model_root),
        "MODEL_VERSION": version, "METRICS_SOURCE": source, **env,
    }, f"http://{metrics}/metrics", {"grpc": grpc, "metrics": f"http://{metrics}/metrics"})


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

    def __init__(self, log_dir: Path, profile: str = "debug", append_logs: bool = False):
        super().__init__(log_dir)
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
    p.add_argument("--log-dir", type=Path, default=ROOT / ".cache" / "run")
    p.add_argument("--grpcurl", default="grpcurl", help="the grpcurl to show in the example command")
    a = p.parse_args(argv)

    m = model(grpc=f"127.0.0.1:{a.model_port}", metrics=f"127.0.0.1:{a.metrics_port}")
    w = app(http=f"127.0.0.1:{a.app_port}", model_host=f"http://127.0.0.1:{a.model_port}")
    stack = Stack(a.log_dir, a.profile)
    stopping = False

    def on_signal(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for s in (m, w):
            stack.up(s)
        logs = os.path.relpath(a.log_dir, Path.cwd())
        print(f"""
  SMS spam detection is running (Ctrl-C stops it; logs in {logs}/):
    web UI        {w.addresses['ui']}
    app metrics   {w.addresses['metrics']}
    model gRPC    {m.addresses['grpc']}   e.g.
      {a.grpcurl} -plaintext -d '{{"text":"WIN a free prize now!"}}' {m.addresses['grpc']} sms.v1.SpamClassifier/Classify
    model metrics {m.addresses['metrics']}
""", flush=True)
        while not stopping:
            for proc in stack.procs:
                if not proc.alive():
                    print(f"error: {proc.name} exited with {proc.popen.returncode}; last lines of "
                          f"{os.path.relpath(proc.log_path, Path.cwd())}:\n{proc.tail(10)}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    except AssertionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        stack.stop_all()
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.exit(__doc__)
    sys.exit(run(sys.argv[2:]))
