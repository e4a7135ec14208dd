"""Process and Prometheus helpers for the observability tests.

Every process is started on 127.0.0.1 with ports picked here, logs to a file, and is
stopped by its own PID (SIGTERM, then SIGKILL) by the fixture that started it.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import requests

from smsdev import ROOT, prometheus
from smsdev import stack as local  # noqa: F401 - re-exported: the one description of the local stack
from smsdev.procs import Proc, ProcGroup, free_port, poll  # noqa: F401 - re-exported
from smsdev.prometheus import NAMESPACE, scrape_config  # noqa: F401 - re-exported


# --------------------------------------------------------------------------- the dashboards

def variable_query(variable: dict) -> str:
    """A query variable's PromQL: the SDK writes the Prometheus editor's object (or a string)."""
    q = variable["query"]
    return q["query"] if isinstance(q, dict) else q



# --------------------------------------------------------------------------- the contract and the rules
# What several test files read: the shipped rules and docs/contracts.md's metrics.

RULES_DIR = ROOT / "grafana" / "rules"
RULES = RULES_DIR / "sms-app.rules.yml"
CONTRACT = ROOT / "docs" / "contracts.md"

# Labels that the scrape adds (ServiceMonitor: namespace, pod, service, endpoint, job,
# instance, container) and Prometheus' own series.
SCRAPE_LABELS = {"namespace", "pod", "service", "endpoint", "job", "instance", "container"}
BUILTIN = {"up": set()}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def contract_metrics() -> dict:
    """{metric: {labels}} from the contract's Metrics section (histograms expanded)."""
    text = CONTRACT.read_text()
    section = re.search(r"^## Metrics\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/contracts.md has no '## Metrics' section"
    out = {}
    for line in section.group(1).splitlines():
        if not line.lstrip().startswith("- "):
            continue
        kind = "histogram" if "histogram" in line else "other"
        for name, labels in re.findall(r"`([a-z_:][a-z0-9_:]*)(?:\{([^}]*)\})?`", line):
            if not name.startswith(("sms_", "istio_", "envoy_")):
                continue
            labelset = {x.strip() for x in (labels or "").split(",") if x.strip()}
            if kind == "histogram":
                for suffix in HISTOGRAM_SUFFIXES:
                    out[name + suffix] = labelset | ({"le"} if suffix == "_bucket" else set())
            else:
                out[name] = labelset
    return out


# --------------------------------------------------------------------------- tools

def require_tool(name: str) -> str:
    """Path of a program the tests need; a missing one fails the test (never a skip)."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: tests/observability/run.sh installs it (apt_ensure)"
    return path


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)


def wait_http_ok(url: str, proc: Proc, timeout: float = 60):
    def ok():
        proc.check_alive()
        return requests.get(url, timeout=2).status_code == 200
    poll(ok, timeout, what=f"{proc.name} to answer {url}")


# --------------------------------------------------------------------------- Prometheus

class Prometheus:
    """A real Prometheus as smsdev.prometheus describes it (Debian's package),
    with a client for its HTTP API."""

    def __init__(self, group: ProcGroup, workdir: Path, config: dict, name: str = "prometheus",
                 extra_args: tuple = ()):
        self.port = free_port()
        svc = prometheus.server(name, listen=f"127.0.0.1:{self.port}", workdir=workdir, config=config,
                                args=extra_args)
        self.url = svc.addresses["url"]
        self.proc = group.start(name, [svc.binary, *svc.args])
        wait_http_ok(svc.ready_url, self.proc)

    def api(self, path: str, **params):
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body.get("status") == "success", (
            f"Prometheus {path} {params}: HTTP {r.status_code} {body}")
        return body["data"]

    def query(self, expr: str):
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return data["result"]

    def query_range(self, expr: str, seconds: int = 30, step: str = "1s"):
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)["result"]

    def targets_up(self, n: int) -> bool:
        active = self.api("targets")["activeTargets"]
        return len(active) == n and all(t["health"] == "up" for t in active)


def finite(sample) -> bool:
    value = float(sample["value"][1])
    return not math.isnan(value) and not math.isinf(value)


class Load:
    """Bounded background traffic: calls fn() in a loop until stopped or the deadline."""

    def __init__(self, fn, pause: float = 0.05, max_seconds: float = 240, max_calls: int = 20000):
        self.fn, self.pause, self.max_seconds, self.max_calls = fn, pause, max_seconds, max_calls
        self.stop_event = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while (not self.stop_event.is_set() and time.monotonic() < deadline
               and self.calls < self.max_calls):
            try:
                self.fn()
            except Exception as exc:  # noqa: BLE001 - reported by the test that reads it
                if len(self.errors) < 20:
                    self.errors.append(repr(exc))
            self.calls += 1
            self.stop_event.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=30)


# --------------------------------------------------------------------------- Alertmanager

def chart_alertmanager_routing(group_wait: str, group_interval: str, repeat_interval: str) -> dict:
    """The route and inhibit rules of the chart's AlertmanagerConfig
    (helm/templates/alertmanagerconfig.yaml) in Alertmanager's own configuration format, so
    a real Alertmanager routes as the chart does; the timings the chart takes from its
    values are given here (a test's are seconds)."""
    import yaml
    text = (ROOT / "helm" / "templates" / "alertmanagerconfig.yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("{{-"))
    text = re.sub(r"\{\{[^}]*\}\}", "templated", text)
    (spec,) = [d["spec"] for d in yaml.safe_load_all(text)
               if isinstance(d, dict) and d.get("kind") == "AlertmanagerConfig"]
    ops = {"": "=", "Equal": "=", "NotEqual": "!=", "RegexMatch": "=~", "NotRegexMatch": "!~"}

    def matchers(ms):
        return [f'{m["name"]}{ops[m.get("matchType", "")]}"{m["value"]}"' for m in ms]

    def route(r):
        out = {"receiver": r["receiver"]}
        if "matchers" in r:
            out["matchers"] = matchers(r["matchers"])
        for key, name in (("groupBy", "group_by"), ("groupWait", "group_wait"),
                          ("groupInterval", "group_interval"), ("repeatInterval", "repeat_interval")):
            if key in r:
                out[name] = r[key]
        if "routes" in r:
            out["routes"] = [route(x) for x in r["routes"]]
        return out
    top = route(spec["route"])
    top.update({"group_wait": group_wait, "group_interval": group_interval, "repeat_interval": repeat_interval})
    assert "templated" not in str(top), top
    return {"route": top, "inhibit_rules": [
        {"source_matchers": matchers(r["sourceMatch"]), "target_matchers": matchers(r["targetMatch"]),
         "equal": r["equal"]} for r in spec.get("inhibitRules", [])]}


# --------------------------------------------------------------------------- PromQL text

_TOP_SET_OPS = re.compile(r"\b(and|or|unless)\b(\s+(on|ignoring)\s*\([^)]*\))?")
_TRAILING_CMP = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?[-+]?[0-9.]+(e[-+]?[0-9]+)?\s*$")


def _depth_map(expr: str) -> list[int]:
    depth, out, quote = 0, [], None
    for ch in expr:
        if quote:
            out.append(-1)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
            out.append(-1)
            continue
        if ch in "([{":
            out.append(depth)
            depth += 1
            continue
        if ch in ")]}":
            depth -= 1
        out.append(depth)
    return out


def split_set_operators(expr: str) -> list[str]:
    """Operands of the top-level `and` / `or` / `unless` of a PromQL expression."""
    depth = _depth_map(expr)
    parts, start = [], 0
    for m in _TOP_SET_OPS.finditer(expr):
        if depth[m.start()] == 0 and m.start() >= start:
            parts.append(expr[start:m.start()])
            start = m.end()
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


def strip_outer_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = _depth_map(expr)
        # the opening paren must close at the very end
        if any(d == 0 for d in depth[1:-1]):
            break
        expr = expr[1:-1].strip()
    return expr


# Sloth's burn-rate thresholds: `max(slo:... > (14.4 * 0.001)) without (sloth_window)`
_BURN_THRESHOLD = re.compile(r"\s*>\s*\(\s*[0-9.]+\s*\*\s*[0-9.e-]+\s*\)")


def data_queries(alert_expr: str) -> list[str]:
    """What an alert expression looks at, without its threshold: the operands of its
    top-level set operators, each with a trailing comparison against a number removed
    (and Sloth's comparisons against a burn rate times the budget)."""
    alert_expr = _BURN_THRESHOLD.sub("", alert_expr)
    out = []
    for part in split_set_operators(strip_outer_parens(alert_expr)):
        part = strip_outer_parens(part)
        if len(split_set_operators(part)) > 1:
            out.extend(data_queries(part))
            continue
        depth = _depth_map(part)
        m = _TRAILING_CMP.search(part)
        if m and depth[m.start()] == 0:
            part = part[:m.start()]
        out.append(strip_outer_parens(part))
    return out


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\\\]|\\\\.)*)\"")
# label_replace(v, "dst", "replacement", "src", "regex"): the four strings close the call.
_LABEL_REPLACE_DST = re.compile(r',\s*"([a-zA-Z_][a-zA-Z0-9_]*)",\s*"[^"]*",\s*"[a-zA-Z0-9_]*",\s*"(?:[^"\\]|\\.)*"\s*\)')
_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def promql_names(expr: str) -> dict:
    """Metric names, label matchers and grouping labels used in a PromQL expression.

    Returns {"metrics": {name: [(label, op, value), ...]}, "grouping": {label, ...},
    "created": {label, ...}} (`created`: the labels label_replace writes).
    Enough for the expressions of this repository's dashboards and rules (it is checked
    against known answers in the tests), not a full PromQL parser.
    """
    metrics: dict[str, list] = {}
    grouping = set()
    created = set(_LABEL_REPLACE_DST.findall(expr))
    for m in _GROUPING.finditer(expr):
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
    rest = _GROUPING.sub(" ", expr)
    for m in _SELECTOR.finditer(rest):
        matchers = _MATCHER.findall(m.group(2))
        name = m.group(1)
        if name is None:  # {__name__=~"a|b"}
            name = next((v for (l, _, v) in matchers if l == "__name__"), None)
            if name is None:
                continue
            for alt in name.split("|"):
                metrics.setdefault(alt, []).extend(x for x in matchers if x[0] != "__name__")
            continue
        metrics.setdefault(name, []).extend(matchers)
    rest = _SELECTOR.sub(lambda m: " " + (m.group(1) or "") + " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\"[^\"]*\"", " ", rest)
    for m in _IDENT.finditer(rest):
        name = m.group(1)
        if name.lower() in _KEYWORDS:
            continue
        metrics.setdefault(name, [])
    return {"metrics": metrics, "grouping": grouping, "created": created}
