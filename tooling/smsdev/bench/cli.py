"""python -m smsdev.bench: the sections asked for (--only), in order, on one session; then
the targets printed, the run recorded in docs/performance.md (unless --no-record) and
written as JSON. Exits 1 when the run failed (no targets then), 0 otherwise."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import record, report
from .artifact import dense_artifact
from .common import MESSAGE, ROOT, SECTIONS
from .facts import chart_memory_limits
from .sections import oip, ort, overload, ready, shadow, throughput
from .session import Session
from .targets import targets


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smsdev.bench", description="make bench: what the services cost and "
                                "hold, every comparison measured in the same run on the same cores")
    p.add_argument("--duration", type=int, default=5, help="seconds of each measured load (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up load before each (default 1)")
    p.add_argument("--overload-duration", type=int, default=5, help="seconds of each overload (default 5)")
    p.add_argument("--shadow-rps", type=int, default=4000, help="calls/s to the serving model and to the shadow "
                   "in the shadow runs (default 4000)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--dense-rev", help="the commit whose models/v1 is today's dense artifact (default: found in "
                   "the history)")
    p.add_argument("--json", type=Path, default=ROOT / "test-output" / "bench" / "bench.json")
    p.add_argument("--no-record", action="store_true", help="do not write the run into docs/performance.md")
    p.add_argument("--log-dir", type=Path, default=ROOT / ".cache" / "bench")
    p.add_argument("--mlserver-venv", default=os.environ.get("BENCH_MLSERVER_VENV"),
                   help="the virtualenv with bench/mlserver/requirements.txt (scripts/bench.sh makes it)")
    p.add_argument("--venv", default=os.environ.get("BENCH_VENV"),
                   help="the virtualenv with bench/requirements.txt (scripts/bench.sh makes it)")
    return p


def run_sections(s: Session, only: list[str]):
    r = s.result
    dense_root = None
    if {"ort", "throughput"} & set(only):
        dense_root, commit = dense_artifact(s.work, s.a.dense_rev)
        r["dense_artifact"] = {"commit": commit, "onnx_bytes": (dense_root / "v1" / "model.onnx").stat().st_size}
        print(f"today's dense artifact: models/v1 of {commit[:10]} ({r['dense_artifact']['onnx_bytes']:,} bytes)",
              flush=True)
    if "ort" in only:
        ort.run(s, dense_root)
    elif "metrics" in only:
        ort.run(s, None, benches=("metrics",))
    if "ready" in only:
        ready.run(s)
    if "throughput" in only:
        throughput.run(s, dense_root)
    if "shadow" in only:
        shadow.run(s)
    if "oip" in only:
        oip.run(s)
    if "overload" in only:
        r["chart_memory_limits_mib"] = chart_memory_limits()
        overload.run(s, r["chart_memory_limits_mib"])


def main(argv: list[str]) -> int:
    p = parser()
    a = p.parse_args(argv)
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    if set(only) - set(SECTIONS):
        p.error(f"unknown sections {sorted(set(only) - set(SECTIONS))}")
    if "throughput" in only and not a.venv:
        p.error("the FastAPI comparison needs --venv (or BENCH_VENV): run through scripts/bench.sh")

    # wrk's 10,000 connections and the app's as many sockets: every child inherits this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if "overload" in only and hard != resource.RLIM_INFINITY and hard < 10_500:
        p.error(f"the overload needs more than 10,500 open files per process; the hard limit is {hard}")

    s = Session(a)
    r = s.result
    r["machine"] = {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                             text=True).stdout.strip() or None}
    r["settings"] = {"duration_s": a.duration, "warmup_s": a.warmup, "overload_s": a.overload_duration,
                     "message_chars": len(MESSAGE), "h2load_threads": 1, "wrk_threads": 1,
                     "server_log_level": "model: the chart's (info, json); app: warn", "sections": only}
    print(f"make bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start "
          "(figures move with whatever else runs on these cores)", flush=True)
    failed = None
    try:
        run_sections(s, only)
    except (AssertionError, OSError, subprocess.SubprocessError) as err:  # BenchError, a dead service, I/O
        failed = f"{type(err).__name__}: {err}" if not isinstance(err, AssertionError) else str(err)
    finally:
        s.servers.stop_all()
    r["targets"] = targets(r) if not failed else []
    r["machine"]["loadavg_at_end"] = os.getloadavg()
    r["elapsed_s"] = round(time.monotonic() - s.started, 1)
    r["error"] = failed
    if not failed:
        report.print_targets(r["targets"])
        if not a.no_record:
            record.record(r)
            print(f"recorded in {os.path.relpath(record.DOC, Path.cwd())}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(r, indent=2) + "\n")
    print(f"\n{'FAILED: ' + failed if failed else 'done'} in {r['elapsed_s']:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f} at the end; JSON in {os.path.relpath(a.json, Path.cwd())}",
          file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0
