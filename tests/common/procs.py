"""The one place the Python test suites (ui, mesh, observability) start and stop the
real services: ports picked on 127.0.0.1, each process logging to a file, every process
stopped by its own PID (SIGTERM, then SIGKILL), and polling instead of sleeping.

Suites import it after `sys.path.insert(0, <repo>/tests/common)`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> Path:
    """A service binary from the debug build the suite's run.sh made."""
    path = ROOT / "target" / "debug" / name
    assert path.is_file() and os.access(path, os.X_OK), (
        f"{path.relative_to(ROOT)} is missing: the suite's run.sh builds it with "
        "`cargo build -p model-service -p app-service` (did the build fail?)")
    return path


def poll(predicate, timeout: float, what: str = "condition", interval: float = 0.1):
    """Call predicate until it returns a truthy value; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


class Proc:
    """A child process with its output in `log_dir/<name>.log`, stopped by PID."""

    def __init__(self, name: str, cmd: list, log_dir: Path, env: dict | None = None,
                 cwd: Path | None = None, append: bool = False):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab" if append else "wb")
        self.popen = subprocess.Popen([str(c) for c in cmd], stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                      cwd=str(cwd or ROOT))
        self.pid = self.popen.pid

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
        assert self.alive(), (f"{self.name} exited with {self.popen.returncode}; "
                              f"last lines of its log:\n{self.tail()}")

    def stop(self, timeout: float = 10):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self._log.close()


class ProcGroup:
    """Starts processes and stops every one of them (last started first)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name, cmd, env=None, cwd=None) -> Proc:
        p = Proc(name, cmd, self.log_dir, env=env, cwd=cwd)
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


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` (Prometheus text format) whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total
