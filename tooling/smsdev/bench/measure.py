"""One measured load against one server: a warm-up, the load, then the server's own counters
read before and after and checked (h2load sees HTTP 200 whatever the gRPC status, so every
gRPC run is judged on the model's `sms_model_requests_total{code}`, every app run on its
`sms_requests_total{status}`), the server's memory at the end, and the other processes'
CPU meanwhile. Each load is a row of the run."""

from __future__ import annotations

import urllib.request

from smsdev import procs
from smsdev import stack as local
from smsdev.promtext import by_label

from . import report
from .common import BenchError, delta
from .loadgen import H2load, wrk
from .probes import PeakRss
from .procfs import OtherCpu, cpu_seconds, descendants, pss_mib, rss_mib
from .session import Session


def scrape(url: str) -> str:
    """A metrics page. Right after an overload a server may still hold MAX_CONNECTIONS
    connections that the load generator is closing, and refuse the scrape's with 503 and
    Retry-After: it is retried for up to 10 s."""
    def page():
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()
    return procs.poll(page, 10, what=f"{url} answering")


def model_codes(page: str) -> dict[str, float]:
    """The model's calls so far by gRPC code, from its metrics page."""
    return by_label(page, "sms_model_requests_total", "code")


def app_statuses(page: str) -> dict[str, float]:
    """The app's answers to POST /sms/ so far by HTTP status, from its metrics page."""
    return by_label(page, "sms_requests_total", "status", route="/sms/")


def add(s: Session, row: dict) -> dict:
    s.rows.append(row)
    print(report.row_line(row), flush=True)
    return row


def check_codes(name: str, codes: dict, load: dict, allowed: set, abandoned_at_end: int = 0,
                refused_streams: int = 0):
    """Every call h2load finished is counted by the model under a code, and the codes are
    the expected ones. A timed run ends with h2load closing its connections on the calls
    still in flight (at most connections x streams): the model counts those Cancelled,
    allowed up to that. `refused_streams`: how many streams the server may reset unserved
    (REFUSED_STREAM, the protocol's retryable refusal) because the client opened more
    than a connection carries before it read the server's limit; h2load counts them
    `errored`, and only those failures are allowed."""
    teardown = codes.get("Cancelled", 0)
    unexpected = {k: v for k, v in codes.items() if k not in allowed | {"Cancelled"}}
    if unexpected or teardown > abandoned_at_end:
        raise BenchError(f"{name}: the model answered {codes} (expected only {sorted(allowed)}, and Cancelled "
                         f"for at most the {abandoned_at_end} calls in flight when the load stopped)")
    refused = min(load["errored_http"], refused_streams)
    if load["failed_http"] - refused:
        raise BenchError(f"{name}: h2load counted {load['failed_http']} failed requests "
                         f"({refused} of them streams refused over the server's limit):\n{load['output']}")
    counted = sum(codes.values())
    if counted < load["requests"]:
        raise BenchError(f"{name}: h2load finished {load['requests']} calls, the model counted {counted}")


def grpc_load(s: Session, name: str, group: str, svc: local.Service, proc: procs.Proc, connections: int,
              streams: int = 1, warm: bool = True, **extra) -> dict:
    """Classify at `connections` x `streams` in flight, every answer Ok; after a warm-up
    load unless `warm` is off (the run follows another on the same server)."""
    grpc, metrics = svc.addresses["grpc"], svc.addresses["metrics"]
    if warm:
        s.h2.run(grpc, connections=connections, streams=streams, duration=s.a.warmup)
    before = model_codes(scrape(metrics))
    cpu = cpu_seconds(proc.pid)
    with OtherCpu() as others:
        load = s.h2.run(grpc, connections=connections, streams=streams, duration=s.a.duration)
    cpu = cpu_seconds(proc.pid) - cpu
    proc.check_alive()
    rss = rss_mib(proc.pid)
    codes = delta(model_codes(scrape(metrics)), before)
    check_codes(name, codes, load, allowed={"Ok"}, abandoned_at_end=connections * streams)
    return add(s, {"name": name, "group": group, "protocol": "gRPC", "tool": "h2load", "connections": connections,
                   "streams": streams, "rps": load["rps"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
                   "rss_mib": rss, "requests": load["requests"], "codes": codes, "other_cores": others.cores,
                   "cpu_us_per_call": 1e6 * cpu / max(load["requests"], 1), **extra})


def http_load(s: Session, name: str, group: str, url: str, proc: procs.Proc, connections: int = 16,
              app_metrics: str | None = None, **extra) -> dict:
    """POST /sms/ at `connections`, every answer 200: counted by the app itself when it is
    ours (`app_metrics`), by wrk otherwise."""
    wrk(url, connections=connections, duration=s.a.warmup)
    before = app_statuses(scrape(app_metrics)) if app_metrics else {}
    with OtherCpu() as others:
        load = wrk(url, connections=connections, duration=s.a.duration)
    proc.check_alive()
    rss, pss = rss_mib(proc.pid), pss_mib(proc.pid)
    statuses = delta(app_statuses(scrape(app_metrics)), before) if app_metrics else \
        {"2xx": load["requests"] - load["non_2xx"], **({"other": load["non_2xx"]} if load["non_2xx"] else {})}
    if load["non_2xx"] or any(load["socket_errors"].values()) or set(statuses) - {"200", "2xx"}:
        raise BenchError(f"{name}: errors: statuses {statuses}, socket errors {load['socket_errors']}\n{load['output']}")
    if sum(statuses.values()) < load["requests"]:
        raise BenchError(f"{name}: wrk got {load['requests']} answers, the service counted {statuses}")
    return add(s, {"name": name, "group": group, "protocol": "HTTP", "tool": "wrk", "connections": connections,
                   "streams": 1, "rps": load["rps"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
                   "rss_mib": rss, "pss_mib": pss, "requests": load["requests"], "codes": statuses,
                   "other_cores": others.cores, **extra})


def oip_load(s: Session, name: str, h2: H2load, grpc: str, pid: int, rows: int, metrics: str | None = None,
             connections: int = 16, warm: bool = True) -> dict:
    """One ModelInfer load of `rows` rows a call (after a warm-up load unless `warm` is
    off); on the model service (`metrics`) every row is checked as counted."""
    def predictions() -> float:
        return sum(by_label(scrape(metrics), "sms_model_predictions_total", "protocol").values())
    if warm:
        h2.run(grpc, connections=connections, duration=s.a.warmup)
    before = predictions() if metrics else 0
    # Every process the server started, each once (rss_mib sums the tree); the peak sampled
    # every 0.25 s beside the load (the bench's own CPU, not counted in "others").
    cpu = cpu_seconds(pid)
    with OtherCpu() as others, PeakRss(pid, every=0.25) as peak:
        load = h2.run(grpc, connections=connections, duration=s.a.duration)
    cpu = cpu_seconds(pid) - cpu
    rss, anon, processes = rss_mib(pid), rss_mib(pid, "RssAnon"), len(descendants(pid))
    if load["failed_http"]:
        raise BenchError(f"{name}: {load['failed_http']} calls failed")
    # h2load sees HTTP 200 whatever the gRPC status: the rows the model scored are its own count.
    answered = load["requests"]
    if metrics:
        counted = predictions() - before
        answered = min(answered, int(counted // rows))
        if rows == 1 and counted < load["requests"]:
            raise BenchError(f"{name}: h2load finished {load['requests']} calls, the model counted {counted:.0f}")
    rps = load["rps"] * answered / max(load["requests"], 1)
    return add(s, {"name": name, "group": "oip", "protocol": "gRPC", "tool": "h2load", "connections": connections,
                   "rows": rows, "rps": rps, "rows_per_s": rps * rows, "refused": load["requests"] - answered,
                   "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"], "rss_mib": rss, "peak_rss_mib": peak.peak,
                   "anon_rss_mib": anon, "processes": processes, "requests": load["requests"],
                   "other_cores": others.cores, "cpu_us_per_call": 1e6 * cpu / max(load["requests"], 1)})
