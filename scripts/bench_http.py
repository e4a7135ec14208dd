"""`make bench`, the HTTP path: app v1 (cache off) against app v2 (cache on) in front of
the same model v1, with wrk (bounded: 8 s each, 16 connections, 127.0.0.1), the canary's
performance hypothesis measured in one run. The services come from scripts/stack.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import stack as local

LUA = Path(__file__).with_name("bench-app.lua")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def main() -> int:
    s = local.Stack(local.ROOT / ".cache" / "bench", profile="release")
    try:
        model_grpc = f"127.0.0.1:{local.free_port()}"
        s.up(local.model("bench-model", grpc=model_grpc, metrics=f"127.0.0.1:{local.free_port()}",
                         MODEL_RELOAD_SECS="0", RUST_LOG="warn"))
        print("\napp-service POST /sms/ over HTTP (wrk, 2 threads, 16 connections, 8 s), model v1 behind it:")
        print(f"{'app':<34} {'req/s':>10} {'p50':>9} {'p99':>9} {'RSS MiB':>9}")
        for name, version, cache in (("v1 cache off", "v1", False), ("v2 cache on", "v2", True)):
            service = local.app(f"bench-app-{version}", http=f"127.0.0.1:{local.free_port()}",
                                model_host=f"http://{model_grpc}", version=version, cache=cache, RUST_LOG="warn")
            proc = s.up(service)
            out = subprocess.run(["wrk", "-t2", "-c16", "-d8s", "--timeout", "5s", "--latency", "-s", str(LUA),
                                  service.addresses["url"]], capture_output=True, text=True, timeout=60).stdout
            rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
            p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
            p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
            print(f"{name:<34} {rps:>10} {p50:>9} {p99:>9} {rss_mib(proc.pid):>9.1f}")
            if "Non-2xx" in out:
                print(out, file=sys.stderr)
                print(f"error: app {name} answered errors", file=sys.stderr)
                return 1
            proc.stop()
        print("reference (toolchain.md, same kind of machine, wrk c16): Flask+sklearn 333 req/s, "
              "gunicorn 2 workers 828, FastAPI+onnxruntime 2 workers 2,831")
        return 0
    finally:
        s.stop_all()


if __name__ == "__main__":
    sys.exit(main())
