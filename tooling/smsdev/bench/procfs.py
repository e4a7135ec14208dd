"""What /proc says about the servers and the machine: memory and CPU time of a process
tree, the CPU that other processes took, the kernel's dropped connection attempts."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pids: list[int]) -> float:
    """CPU time (user and system) these processes have used so far (gone ones count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / HZ


def cpu_seconds(pid: int) -> float:
    """CPU time the process tree has used so far."""
    return cpu_seconds_of(descendants(pid))


def proc_kib(pid: int, key: str, file: str = "status") -> int:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/{file}").read_text(), re.M)
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of the process and its children (MiB)."""
    return sum(proc_kib(p, key) for p in descendants(pid)) / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size of the process tree: shared pages (one ONNX Runtime library
    mapped by several workers) counted once in total, not once per process."""
    return sum(proc_kib(p, "Pss", "smaps_rollup") for p in descendants(pid)) / 1024


class OtherCpu:
    """How many cores processes other than this bench and its children used during a block
    (the machine's user, system and steal time less ours): a figure taken while this is well
    above 0 was measured on a shared machine and moves with the neighbours' load."""

    @staticmethod
    def machine() -> float:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        return (user + nice + system + steal) / HZ

    @staticmethod
    def ours() -> float:
        t = os.times()  # this process and its waited-for descendants
        live = cpu_seconds_of(descendants(os.getpid())[1:])
        return t.user + t.system + t.children_user + t.children_system + live

    def __enter__(self):
        self.t0, self.m0, self.o0 = time.monotonic(), self.machine(), self.ours()
        return self

    def __exit__(self, *_):
        elapsed = time.monotonic() - self.t0
        self.cores = max(0.0, ((self.machine() - self.m0) - (self.ours() - self.o0)) / elapsed)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (TcpExt
    ListenOverflows): the client retries its SYN a second or more later."""
    lines = [l.split() for l in Path("/proc/net/netstat").read_text().splitlines() if l.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])
