"""Section `oip`: the Open Inference Protocol at c16 on h2load: ModelInfer with 1 row against
Classify on the same server; the chart's logging against warn, in turn; Seldon's MLServer
answering the same ModelInfer frame (throughput, p99 and the memory of every process each
server started); and 64-row calls one at a time (rows/s)."""

from __future__ import annotations

from .. import report
from ..common import AT_WARN, CHART_MODEL_LOGGING
from ..measure import grpc_load, oip_load
from ..session import Session


# The order of a comparison's runs: ABBA five times, ten runs a side; runs 2k-1 and 2k
# are one pair, one of each side, next to each other. On this shared 2-core host one run's
# throughput is within about 10 % of the next one's even for the same calls (an A/A pair of
# 5 s runs), and that noise shrinks only with the time measured: ten pairs, not six, so
# that the median of the pairs sits within a few percent of the cost it measures. Only
# each side's first run has a warm-up; the others follow a run on the same server.
IN_TURN = "ABBA" * 5


def run(s: Session):
    report.section(f"the Open Inference Protocol: ModelInfer against Classify, 64 rows, and Seldon's MLServer "
                   f"({s.a.duration:g} s each, c16, h2load; {s.a.warmup:g} s warm-up before a server's first)")
    m, p = s.servers.model("oip-model-v1")
    mw, pw = s.servers.model("oip-model-v1-at-warn", **AT_WARN)
    grpc, metrics = m.addresses["grpc"], m.addresses["metrics"]
    print(report.ROW_HEADER)
    out = {}
    # Each comparison runs its two sides in turn (IN_TURN) and is judged on the median of its
    # pairs' ratios: the shared machine's speed drifts and jumps between two levels from one
    # run to the next, and a pair sees one level far more often than two runs apart do.
    for i, call in enumerate(IN_TURN):
        when, warm = str(i // 2 + 1), i < 2
        if call == "A":
            out[f"classify-{when}"] = grpc_load(s, f"oip: Classify c16 ({when})", "oip", m, p, 16, warm=warm,
                                                version="v1")
        else:
            out[f"infer1-{when}"] = oip_load(s, f"oip: ModelInfer 1 row c16 ({when})", s.h2_infer, grpc, p.pid, 1,
                                             metrics, warm=warm)
    # The logging's cost: the same calls at warn and at the chart's logging.
    for i, side in enumerate(IN_TURN):
        when, warm = str(i // 2 + 1), i < 2
        if side == "A":
            out[f"warn-{when}"] = grpc_load(s, f"oip: Classify c16 at warn ({when})", "oip-logging", mw, pw, 16,
                                            warm=warm, version="v1", env=AT_WARN)
        else:
            out[f"chart-{when}"] = grpc_load(s, f"oip: Classify c16 at the chart's logging ({when})", "oip-logging",
                                             m, p, 16, warm=warm, version="v1", env=CHART_MODEL_LOGGING)
    if s.a.mlserver_venv:
        mls, mp = s.servers.mlserver()
        out["mlserver"] = oip_load(s, "oip: MLServer ModelInfer 1 row c16", s.h2_infer, mls, mp.pid, 1)
        out["ours-again"] = oip_load(s, "oip: ModelInfer 1 row c16 (after MLServer)", s.h2_infer, grpc, p.pid, 1,
                                     metrics)
    # One call of 64 rows at a time: a 64-row call holds all of a worker's 64 places in
    # the queue while it waits, so a second one waiting beside it is refused whole (the
    # queue bounds rows, not calls). Last: ONNX Runtime keeps the batch's buffers.
    out["infer64"] = oip_load(s, "oip: ModelInfer 64 rows c1", s.h2_infer64, grpc, p.pid, 64, metrics, connections=1)
    s.result["oip"] = out
    s.servers.stop_all()
