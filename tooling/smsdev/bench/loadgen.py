"""The load generators, each bounded in time and read back into one dict per run: h2load
for gRPC (one prebuilt request frame, HTTP/2) and wrk for HTTP (bench/http.lua posts the
message)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .common import BODY, CLASSIFY, MESSAGE, ROOT, BenchError, percentile, to_ms
from .frames import classify_frame

LUA = ROOT / "bench" / "http.lua"


class H2load:
    """gRPC load with h2load: one prebuilt request frame (Classify unless told), HTTP/2,
    closed loop (`streams` calls in flight per connection) or a fixed rate per connection."""

    def __init__(self, work: Path, frame: bytes | None = None, path: str = CLASSIFY, name: str = "classify"):
        self.frame = work / f"{name}.grpc"
        self.frame.write_bytes(frame if frame is not None else classify_frame(MESSAGE))
        self.path = path
        self.work = work
        self.runs = 0

    def command(self, grpc: str, *, connections: int, streams: int = 1, duration: int | None = None,
                count: int | None = None, threads: int = 1, rate: int | None = None, log: Path | None = None,
                warmup: int | None = None):
        # -N: a connection with no activity for 10 s is closed, so a call that never ends
        # cannot hold the run (a timed run stops at its duration anyway).
        cmd = ["h2load", f"-t{threads}", f"-c{connections}", f"-m{streams}", "-N10s", "-d", str(self.frame),
               "-H", "content-type: application/grpc", "-H", "te: trailers"]
        cmd += [f"-D{duration}s"] if duration else [f"-n{count}"]
        if warmup:
            cmd.append(f"--warm-up-time={warmup}s")
        if rate:
            cmd.append(f"--rps={rate}")
        if log:
            cmd.append(f"--log-file={log}")
        return cmd + [f"http://{grpc}{self.path}"]

    def start(self, grpc: str, **kw) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.work / f"h2load-{self.frame.stem}-{self.runs}.log"
        cmd = self.command(grpc, log=log, **kw)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log

    @staticmethod
    def finish(popen: subprocess.Popen, log: Path, timeout: float) -> dict:
        try:
            out, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            out, _ = popen.communicate()
            raise BenchError(f"h2load did not finish within {timeout:.0f} s: {' '.join(popen.args)}\n{out[-2000:]}")
        if popen.returncode != 0:
            raise BenchError(f"h2load failed ({popen.returncode}):\n{out}")
        m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                        r"(\d+) errored, (\d+) timeout", out)
        if not m or not req:
            raise BenchError(f"unexpected h2load output:\n{out}")
        total, started, done, succeeded, failed, errored, timeout_ = map(int, req.groups())
        lat = []
        if log.exists():
            for line in log.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) == 3:
                    lat.append(int(parts[2]) / 1e3)
            log.unlink()
        lat.sort()
        return {"rps": float(m.group(3)), "requests": done, "succeeded_http": succeeded,
                # h2load's `errored` and `timeout` are kinds of `failed`, not more of them.
                "failed_http": failed, "errored_http": errored, "started": started,
                "p50_ms": percentile(lat, 0.50), "p99_ms": percentile(lat, 0.99),
                "max_ms": lat[-1] if lat else float("nan"), "output": out}

    def run(self, grpc: str, timeout: float = 60, **kw) -> dict:
        popen, log = self.start(grpc, **kw)
        return self.finish(popen, log, timeout)


def wrk(url: str, *, connections: int, duration: int, threads: int = 1, timeout_s: int = 2) -> dict:
    """POST /sms/ with the message for `duration` s over `connections` connections."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", f"{timeout_s}s",
           "--latency", "-s", str(LUA), url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                           env={**os.environ, "BENCH_BODY": BODY, "BENCH_PATH": "/sms/"})
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 60} s: {' '.join(cmd)}") from None
    out = r.stdout + r.stderr
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if r.returncode != 0 or not rps or not n:
        raise BenchError(f"wrk failed ({r.returncode}):\n{out}")
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)), "requests": int(n.group(1)),
            "p50_ms": to_ms(pct["50"]), "p99_ms": to_ms(pct["99"]),
            "max_ms": to_ms(latency.group(1)) if latency else float("nan"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups())))
            if sock else {}, "output": out}
