"""Sections `ort` and `metrics`: the in-process benches of model-service/benches, run by
cargo bench. `ort`: ONNX Runtime alone, one message a call on one thread, for v1, v2 and the
pre-lean dense artifact; `metrics`: the per-call metrics cost, OpenTelemetry against the
previous prometheus pipeline, and what the drift histograms add. Each bench prints one
`BENCH_JSON {...}` line, merged into the result."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from smsdev import stack as local

from .. import report
from ..common import ROOT, BenchError
from ..session import Session


def run(s: Session, dense_root: Path | None, benches=("ort", "metrics")):
    what = " and ".join(w for b, w in (("ort", "ONNX Runtime alone"), ("metrics", "the per-call metrics cost"))
                        if b in benches)
    report.section(f"{what} (cargo bench, in process)")
    env = dict(os.environ)
    if dense_root is not None:
        env["BENCH_MODELS"] = f"v1={local.MODELS / 'v1'},v2={local.MODELS / 'v2'},v1-dense={dense_root / 'v1'}"
    r = subprocess.run(["cargo", "bench", "--locked", "-q", "-p", "model-service",
                        *(a for b in benches for a in ("--bench", b))], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
    if r.returncode != 0:
        raise BenchError(f"cargo bench failed:\n{r.stdout}\n{r.stderr}")
    for line in r.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            s.result.update(json.loads(line[len("BENCH_JSON "):]))
        elif line.strip():
            print("  " + line)
