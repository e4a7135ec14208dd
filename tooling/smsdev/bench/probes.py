"""What runs beside a load: a sampler of a process's peak memory, and a caller apart from
the flood (curl for HTTP, h2load -n1 for gRPC) that sees how fast the server itself answers
or refuses."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from .common import BODY, CLASSIFY, percentile, to_ms
from .procfs import rss_mib


class Background(threading.Thread):
    """A loop beside a load, as a context manager: `step` every `every` s (after `after`
    s) from entering the block until leaving it."""

    def __init__(self, every: float, after: float = 0):
        super().__init__(daemon=True)
        self.every, self.after = every, after
        self._halt = threading.Event()

    def step(self) -> bool:
        """One round; False ends the loop early."""
        raise NotImplementedError

    def run(self):
        self._halt.wait(self.after)
        while not self._halt.is_set() and self.step():
            self._halt.wait(self.every)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *_):
        self._halt.set()
        self.join()


class PeakRss(Background):
    """Samples a process tree's RSS every `every` s until stopped; keeps the largest."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(every)
        self.pid, self.peak = pid, 0.0

    def step(self) -> bool:
        self.peak = max(self.peak, rss_mib(self.pid))
        return True

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.peak = max(self.peak, rss_mib(self.pid))


class Probe(Background):
    """A caller apart from the flood: every `every` s, one call on a new connection, its
    outcome and how long it took, until stopped. A closed-loop load generator holding N
    calls in flight sees N / throughput of latency whatever the server does (Little's
    law); a new caller sees how fast the server itself answers or refuses under that load."""

    def __init__(self, call, every: float = 0.05, after: float = 0, limit: int = 2000):
        super().__init__(every, after)
        self.call, self.limit = call, limit
        self.results: list[tuple[str, float]] = []

    def step(self) -> bool:
        self.results.append(self.call())
        return len(self.results) < self.limit

    def summary(self) -> dict:
        ms = sorted(t * 1e3 for _, t in self.results)
        outcomes: dict[str, int] = {}
        for outcome, _ in self.results:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return {"calls": len(ms), "outcomes": dict(sorted(outcomes.items())), "p50_ms": percentile(ms, 0.50),
                "p99_ms": percentile(ms, 0.99), "max_ms": ms[-1] if ms else float("nan")}


def http_probe(url: str, timeout: float = 5):
    """One POST /sms/ on a new connection with curl: (status, or "no answer", and seconds
    as curl measured them, the wait to be accepted included). A 503 must carry Retry-After."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-D", "-", "--max-time", str(timeout), "-H", "content-type: application/json",
           "--data-binary", BODY, "-w", "\n%{http_code} %{time_total}\n", url + "/sms/"]

    def call() -> tuple[str, float]:
        t0 = time.monotonic()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5).stdout
        except subprocess.TimeoutExpired:
            return "no answer", time.monotonic() - t0
        code, took = out.strip().splitlines()[-1].split()
        if code == "000":
            return "no answer", float(took)
        if code == "503" and not re.search(r"^retry-after:", out, re.I | re.M):
            code = "503 without Retry-After"
        return code, float(took)
    return call


GRPC_CODES = {"0": "Ok", "4": "DeadlineExceeded", "8": "ResourceExhausted", "14": "Unavailable"}


def grpc_probe(grpc: str, frame: Path, timeout: float = 5):
    """One Classify call on a new HTTP/2 connection (h2load -n1, verbose): (gRPC code name,
    seconds as h2load measured the request). A refusal is a trailers-only answer, whose
    grpc-status h2load prints; an answer with a body and no status printed there is Ok
    (its status comes in trailers, which h2load does not print)."""
    cmd = ["h2load", "-v", "-n1", "-c1", "-m1", "-d", str(frame), "-H", "content-type: application/grpc",
           "-H", "te: trailers", f"http://{grpc}{CLASSIFY}"]

    def call() -> tuple[str, float]:
        t0 = time.monotonic()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        except subprocess.TimeoutExpired:
            return "no answer", time.monotonic() - t0
        took = re.search(r"time for request:\s+(\S+)", out)
        if "1 succeeded" not in out or not took:
            # Closed without an answer: over the model's MAX_CONNECTIONS (gRPC clients see
            # UNAVAILABLE and retry).
            return "connection closed", time.monotonic() - t0
        status = re.search(r"grpc-status: (\d+)", out)
        code = GRPC_CODES.get(status.group(1), f"code {status.group(1)}") if status else "Ok"
        return code, to_ms(took.group(1)) / 1e3
    return call
