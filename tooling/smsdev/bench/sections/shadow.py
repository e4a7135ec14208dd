"""Section `shadow`: the shadow comparison on vs off. The serving model v1 and a shadow v2
(METRICS_SOURCE shadow) loaded at the same fixed rate at once, as if every call were
mirrored; the shadow with REFERENCE_VERSION=v1 (comparing) or without, in the order off, on,
off, on, so that the p99 difference stands against the run-to-run spread."""

from __future__ import annotations

import statistics

from smsdev.promtext import by_label

from .. import report
from ..common import BenchError, delta
from ..measure import check_codes, model_codes, scrape
from ..procfs import OtherCpu
from ..session import Session


def compared(metrics: str) -> float:
    return sum(by_label(scrape(metrics), "sms_shadow_comparisons_total", "outcome").values())


def run(s: Session):
    rate, d = s.a.shadow_rps, s.a.duration
    per_conn = max(1, rate // 16)
    report.section(f"shadow comparison on vs off: model v1 serving and shadow v2 each at {per_conn * 16:,} calls/s "
                   f"(16 connections, every call mirrored), {d:g} s a run")
    sv, sp = s.servers.model("shadow-serving-v1")
    on, onp = s.servers.model("shadow-v2-comparing", "v2", METRICS_SOURCE="shadow", REFERENCE_VERSION="v1")
    off, offp = s.servers.model("shadow-v2-alone", "v2", METRICS_SOURCE="shadow")
    runs = []
    print(report.SHADOW_HEADER)
    for i, mode in enumerate(("off", "on", "off", "on")):
        target, tproc = (on, onp) if mode == "on" else (off, offp)
        # warm-up of both at the same rate, then the measured run
        for measured in (False, True):
            dur = d if measured else s.a.warmup
            befores = [model_codes(scrape(x.addresses["metrics"])) for x in (sv, target)]
            comp_before = compared(target.addresses["metrics"])
            with OtherCpu() as others:
                started = [s.h2.start(x.addresses["grpc"], connections=16, duration=dur, rate=per_conn)
                           for x in (sv, target)]
                loads = [s.h2.finish(p, log, dur + 60) for p, log in started]
        for p in (sp, tproc):
            p.check_alive()
        codes = [delta(model_codes(scrape(x.addresses["metrics"])), b) for x, b in zip((sv, target), befores)]
        for name, c, load in zip(("serving", f"shadow ({mode})"), codes, loads):
            check_codes(f"shadow run {i + 1} {name}", c, load, allowed={"Ok"}, abandoned_at_end=16)
        n = int(compared(target.addresses["metrics"]) - comp_before)
        if mode == "on" and n < loads[1]["requests"]:
            raise BenchError(f"the comparing shadow compared {n} of {loads[1]['requests']} calls")
        run_ = {"mode": mode, "serving_rps": loads[0]["rps"], "serving_p50_ms": loads[0]["p50_ms"],
                "serving_p99_ms": loads[0]["p99_ms"], "shadow_rps": loads[1]["rps"],
                "shadow_p50_ms": loads[1]["p50_ms"], "shadow_p99_ms": loads[1]["p99_ms"], "compared": n,
                "other_cores": others.cores}
        runs.append(run_)
        print(report.shadow_line(i + 1, run_), flush=True)
    s.servers.stop_all()
    out = {"rate_per_s": per_conn * 16, "connections": 16, "runs": runs}
    for who in ("serving", "shadow"):
        p99 = {m: [r[f"{who}_p99_ms"] for r in runs if r["mode"] == m] for m in ("off", "on")}
        spread = max(abs(p99["off"][0] - p99["off"][1]), abs(p99["on"][0] - p99["on"][1]))
        diff = statistics.mean(p99["on"]) - statistics.mean(p99["off"])
        out[who] = {"p99_off_ms": p99["off"], "p99_on_ms": p99["on"], "p99_difference_ms": diff,
                    "run_to_run_spread_ms": spread}
    s.result["shadow"] = out
