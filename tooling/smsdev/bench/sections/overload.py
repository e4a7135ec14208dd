"""Section `overload`: the app at wrk c=10000 and the model at h2load -c800 -m100, for the
overload's duration each. Peak RSS (sampled every 50 ms) against the chart's memory limits,
every answer counted by status or code, health afterwards, and how soon RSS is back within
2x of idle. Fast means within the app's model deadline (the chart's
appService.modelTimeoutMs), for the flood's answers (p99) and for a new caller apart from
the flood: a call every 50 ms on a new connection, which sees how fast the server answers
or refuses, where the flood's own latency is its calls in flight over the throughput. The
kernel's dropped connection attempts (listen queue full) are counted."""

from __future__ import annotations

import json
import time
import urllib.request

from smsdev import procs
from smsdev import stack as local
from smsdev.promtext import metric

from .. import report
from ..common import BODY, BenchError, delta
from ..facts import chart_model_deadline_ms, model_streams_per_connection
from ..loadgen import wrk
from ..measure import app_statuses, check_codes, model_codes, scrape
from ..probes import PeakRss, Probe, grpc_probe, http_probe
from ..procfs import listen_overflows, rss_mib
from ..session import Session


def run(s: Session, limits: dict):
    d = s.a.overload_duration
    fast = chart_model_deadline_ms()
    streams = model_streams_per_connection()
    report.section(f"overload ({d:g} s each): the app at wrk c=10000, the model at h2load -c800 -m100 (after 2 s "
                   "of warm-up at the same load)")
    s.result["overload"] = {"app": app(s, d, limits["app"], fast), "model": model(s, d, limits["model"], fast, streams)}


def app(s: Session, d: int, limit: int, fast: int) -> dict:
    """The app, with a model of its own behind it."""
    m, mp = s.servers.model("overload-app-model")
    a, ap = s.servers.app("overload-app", m)
    url, metrics = a.addresses["url"], a.addresses["metrics"]
    wrk(url, connections=4, duration=1)
    time.sleep(1)
    idle = rss_mib(ap.pid)
    page = scrape(metrics)
    before = app_statuses(page)
    refused_before = metric(page, "sms_refused_connections_total")
    overflows = listen_overflows()
    with PeakRss(ap.pid) as peak, PeakRss(mp.pid) as model_peak, Probe(http_probe(url)) as probe:
        load = wrk(url, connections=10000, threads=2, duration=d, timeout_s=2)
    overflows = listen_overflows() - overflows
    ap.check_alive()
    page = scrape(metrics)
    statuses = delta(app_statuses(page), before)
    # 503s written before any request was read (over MAX_CONNECTIONS): their own counter.
    statuses["503 over MAX_CONNECTIONS"] = int(metric(page, "sms_refused_connections_total") - refused_before)
    healthy = app_healthy(a)
    after, after_s = settle(ap.pid, idle)
    out = {"connections": 10000, "duration_s": d, "answers_per_s": load["rps"], "answers": load["requests"],
           "statuses": statuses, "socket_errors": load["socket_errors"], "p50_ms": load["p50_ms"],
           "p99_ms": load["p99_ms"], "max_ms": load["max_ms"], "idle_rss_mib": idle, "peak_rss_mib": peak.peak,
           "vmhwm_mib": rss_mib(ap.pid, "VmHWM"), "limit_mib": limit, "rss_after_mib": after,
           "settle_s": after_s, "healthy_after": healthy, "model_peak_rss_mib": model_peak.peak,
           "new_caller": probe.summary(), "new_caller_allowed": ["200", "503"], "fast_ms": fast,
           "listen_queue_overflows": overflows}
    print("\n".join(report.overload_lines("app", out, "statuses")), flush=True)
    if set(statuses) - {"200", "503", "503 over MAX_CONNECTIONS"}:
        raise BenchError(f"app under overload answered {statuses} (only 200 and 503 expected)")
    if not healthy:
        raise BenchError("the app was not healthy after the overload")
    s.servers.stop_all()
    return out


def model(s: Session, d: int, limit: int, fast: int, streams_per_connection: int) -> dict:
    m, mp = s.servers.model("overload-model")
    grpc, metrics = m.addresses["grpc"], m.addresses["metrics"]
    s.h2.run(grpc, connections=4, count=400)
    time.sleep(1)
    idle = rss_mib(mp.pid)
    page = scrape(metrics)
    before = model_codes(page)
    refused_before = metric(page, "sms_model_refused_connections_total", listener="grpc")
    with PeakRss(mp.pid) as peak, Probe(grpc_probe(grpc, s.h2.frame), after=2) as probe:
        # Two threads, and a warm-up in which the 800 connections open: h2load 1.52 with
        # several threads can miss the stop of clients that connect after the measured
        # time began, and then never exits (seen here with -D1s and no warm-up).
        load = s.h2.run(grpc, connections=800, streams=100, threads=2, duration=d, warmup=2, timeout=d + 60)
    mp.check_alive()
    page = scrape(metrics)
    codes = delta(model_codes(page), before)
    refused = int(metric(page, "sms_model_refused_connections_total", listener="grpc") - refused_before)
    healthy = model_healthy(s, m)
    after, after_s = settle(mp.pid, idle)
    out = {"connections": 800, "streams": 100, "duration_s": d, "answers_per_s": load["rps"],
           "answers": load["requests"], "codes": codes, "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
           "max_ms": load["max_ms"], "idle_rss_mib": idle, "peak_rss_mib": peak.peak,
           "vmhwm_mib": rss_mib(mp.pid, "VmHWM"), "limit_mib": limit, "rss_after_mib": after, "settle_s": after_s,
           "healthy_after": healthy, "refused_streams": load["errored_http"],
           "streams_per_connection": streams_per_connection, "refused_connections": refused,
           "new_caller": probe.summary(), "fast_ms": fast,
           # A connection over MAX_CONNECTIONS is closed at once (UNAVAILABLE).
           "new_caller_allowed": ["Ok", "ResourceExhausted", "connection closed"]}
    print("\n".join(report.overload_lines("model", out, "codes")), flush=True)
    check_codes("model overload", codes, load, allowed={"Ok", "ResourceExhausted"}, abandoned_at_end=800 * 100,
                refused_streams=800 * (100 - streams_per_connection))
    if not healthy:
        raise BenchError("the model was not healthy after the overload")
    s.servers.stop_all()
    return out


def settle(pid: int, idle: float, within: float = 15) -> tuple[float, float]:
    """RSS once it is back within 2x of idle (or after `within` s), and when."""
    t0 = time.monotonic()
    while True:
        now = rss_mib(pid)
        if now <= 2 * idle or time.monotonic() - t0 >= within:
            return now, time.monotonic() - t0
        time.sleep(0.5)


def app_healthy(a: local.Service) -> bool:
    """The app classifies again within 10 s and reports ready."""
    def ok():
        req = urllib.request.Request(a.addresses["url"] + "/sms/", data=BODY.encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200 and json.loads(r.read())["result"] in ("spam", "ham")
    try:
        procs.poll(ok, 10, what="app answering after overload")
        return procs.http_ok(a.ready_url)
    except AssertionError:
        return False


def model_healthy(s: Session, m: local.Service) -> bool:
    """The model answers 20 calls Ok within 10 s."""
    def ok():
        before = model_codes(scrape(m.addresses["metrics"]))
        load = s.h2.run(m.addresses["grpc"], connections=1, count=20)
        return load["requests"] == 20 and delta(model_codes(scrape(m.addresses["metrics"])), before) == {"Ok": 20}
    try:
        procs.poll(ok, 10, what="model answering after overload")
        return True
    except AssertionError:
        return False
