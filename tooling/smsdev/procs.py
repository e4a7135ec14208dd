"""Processes of the local stack, started, watched and stopped by their own PID (SIGTERM,
then SIGKILL), each logging to a file of its own; readiness is polled, never slept on. A
supervisor's children (`make run`, `make cluster`) die with it however it
ends, even by SIGKILL (`die_with_parent`), and are recorded in its run state
(smsdev.runstate) while they run. Also: free ports, and what listens where (by /proc).

Standard library only.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import TYPE_CHECKING

from smsdev import ROOT

if TYPE_CHECKING:
    from smsdev.runstate import RunState

_ports = random.Random()  # its own generator: a test seeding `random` must not pick the same ports


def free_port() -> int:
    """A port free on 127.0.0.1 now, from below the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) can be taken again as the local port of any outgoing
    connection before the server binds it, and load tests open thousands (an Envoy of a
    local test once failed with `Address already in use` that way)."""
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
    process: a child started from a short-lived thread (a handler serving one request)
    would be killed when that thread ends. So every such
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
