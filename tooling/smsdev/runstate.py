"""A supervisor's run directory (`make run`, `make cluster`): one supervisor at
a time (a lock), and the processes it runs, so the next start can clean up after one that
could not stop them. Standard library only."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from smsdev.procs import proc_start_time

if TYPE_CHECKING:
    from smsdev.procs import Proc


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
