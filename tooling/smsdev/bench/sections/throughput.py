"""Section `throughput`: every server up at once, loaded one after another for the same
time each: the model service over gRPC at c1/c16/c64 (v1, v2), the pre-lean dense v1 on the
same binary at c16, FastAPI + onnxruntime on the same artifacts at c16, the app end to end
at c16 (v1 cache off, v2 cache on), the shipped limits against limits raised out of the way
(each raised run between two shipped ones, so that a shared machine's drift shows). Every
model run is at the chart's logging; its cost against warn is measured in section `oip`."""

from __future__ import annotations

from pathlib import Path

from smsdev import stack as local

from .. import report
from ..common import MESSAGE
from ..measure import grpc_load, http_load
from ..session import Session

RAISED_MODEL = {"QUEUE_PER_WORKER": "10000"}
RAISED_APP = {"MAX_CONCURRENT_REQUESTS": "1000000"}


def run(s: Session, dense_root: Path):
    report.section(f"throughput, all servers up, loaded one after another ({s.a.warmup:g} s warm-up + "
                   f"{s.a.duration:g} s each; one {len(MESSAGE)}-character message)")
    servers = s.servers
    m1, p1 = servers.model("model-v1")
    m2, p2 = servers.model("model-v2", "v2")
    md, pd = servers.model("model-v1-dense", root=dense_root)
    mr, pr = servers.model("model-v1-raised", **RAISED_MODEL)
    a1, q1 = servers.app("app-v1", m1)
    a2, q2 = servers.app("app-v2-cache", m1, version="v2", cache=True)
    ar, qr = servers.app("app-v1-raised", mr, **RAISED_APP)
    f1, g1 = servers.fastapi("fastapi-v1", local.MODELS / "v1")
    f2, g2 = servers.fastapi("fastapi-v2", local.MODELS / "v2")
    print(report.ROW_HEADER)
    for c in (1, 16, 64):
        grpc_load(s, f"model v1 gRPC c{c}", "model", m1, p1, c, version="v1")
    for c in (1, 16, 64):
        grpc_load(s, f"model v2 gRPC c{c}", "model", m2, p2, c, version="v2")
    grpc_load(s, "model v1 dense (pre-lean) artifact gRPC c16", "dense", md, pd, 16, version="v1")
    http_load(s, "FastAPI+onnxruntime v1 HTTP c16", "fastapi", f1, g1, version="v1")
    http_load(s, "FastAPI+onnxruntime v2 HTTP c16", "fastapi", f2, g2, version="v2")
    http_load(s, "app v1 cache off -> model v1, HTTP c16", "app", a1.addresses["url"], q1,
              app_metrics=a1.addresses["metrics"], version="v1")
    http_load(s, "app v2 cache on -> model v1, HTTP c16", "app", a2.addresses["url"], q2,
              app_metrics=a2.addresses["metrics"], version="v2")
    for when in ("before", "raised", "after"):
        if when == "raised":
            grpc_load(s, "model v1 gRPC c16, limits raised", "limits-raised", mr, pr, 16, version="v1",
                      limits=RAISED_MODEL)
        else:
            grpc_load(s, f"model v1 gRPC c16, shipped limits ({when})", "limits-shipped", m1, p1, 16, version="v1")
    for when in ("before", "raised", "after"):
        if when == "raised":
            http_load(s, "app v1 -> model v1, HTTP c16, limits raised", "app-limits-raised", ar.addresses["url"], qr,
                      app_metrics=ar.addresses["metrics"], version="v1", limits={**RAISED_MODEL, **RAISED_APP})
        else:
            http_load(s, f"app v1 -> model v1, HTTP c16, shipped limits ({when})", "app-limits-shipped",
                      a1.addresses["url"], q1, app_metrics=a1.addresses["metrics"], version="v1")
    servers.stop_all()
