"""Section `ready`: time to ready of the model service, from process start to its metrics
page answering (polled every 5 ms), three starts of each version."""

from __future__ import annotations

import statistics
import time

from smsdev import procs
from smsdev import stack as local

from .. import report
from ..session import Session


def run(s: Session):
    report.section("time to ready of the model service (process start -> /metrics answers, polled every 5 ms)")
    stack = s.servers.stack
    out = {}
    for version in ("v1", "v2"):
        times = []
        for i in range(3):
            svc = local.model(f"ready-{version}-{i}", grpc=f"127.0.0.1:{procs.free_port()}",
                              metrics=f"127.0.0.1:{procs.free_port()}", version=version,
                              MODEL_RELOAD_SECS="0", RUST_LOG="warn")
            t0 = time.monotonic()
            proc = stack.launch(svc)
            stack.wait_ready(svc, proc, timeout=30, interval=0.005)
            times.append(time.monotonic() - t0)
            proc.stop()
        out[version] = {"starts_s": [round(t, 4) for t in times], "median_s": statistics.median(times),
                        "max_s": max(times)}
        print(f"  {version}: " + ", ".join(f"{t:.3f} s" for t in times))
    s.result["ready"] = out
