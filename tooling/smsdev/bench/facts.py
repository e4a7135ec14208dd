"""What the bench takes from the repository's own files, each read from its one home and
refused, naming what is missing, when it is not there in the shape expected: the chart's
values (helm/values.yaml, read with a YAML parser) and a constant of the model service's
code (model-service/src/lib.rs). No copy of either lives in the bench."""

from __future__ import annotations

import re

import yaml

from .common import ROOT, BenchError

VALUES = ROOT / "helm" / "values.yaml"
MODEL_LIB = ROOT / "model-service" / "src" / "lib.rs"


def chart_values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def value(values: dict, path: str):
    """values at a dotted path (`appService.modelTimeoutMs`); a missing key is a BenchError."""
    node = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise BenchError(f"helm/values.yaml has no {path}")
        node = node[key]
    return node


def mib(quantity) -> int:
    """A Kubernetes memory quantity in Mi or Gi, in MiB."""
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(quantity))
    if not m:
        raise BenchError(f"a memory limit in helm/values.yaml is {quantity!r}, not a number of Mi or Gi")
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def chart_memory_limits(values: dict | None = None) -> dict[str, int]:
    """The chart's memory limits of the app and model containers (MiB):
    appService/modelService.resources.limits.memory."""
    values = values if values is not None else chart_values()
    return {key: mib(value(values, f"{section}.resources.limits.memory"))
            for key, section in (("app", "appService"), ("model", "modelService"))}


def chart_model_deadline_ms(values: dict | None = None) -> int:
    """The app's deadline for a model call (appService.modelTimeoutMs): under overload, an
    answer or refusal is fast when it comes before a caller would give up on it; the app
    itself waits this long for the model."""
    values = values if values is not None else chart_values()
    deadline = value(values, "appService.modelTimeoutMs")
    if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
        raise BenchError(f"appService.modelTimeoutMs in helm/values.yaml is {deadline!r}, not milliseconds")
    return deadline


def model_streams_per_connection(source: str | None = None) -> int:
    """Calls one HTTP/2 connection to the model carries at once (MAX_STREAMS_PER_CONNECTION in
    model-service/src/lib.rs): streams a client opens beyond it are refused. Exactly one
    definition with a literal value, or the bench refuses to guess."""
    source = source if source is not None else MODEL_LIB.read_text()
    found = re.findall(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?const MAX_STREAMS_PER_CONNECTION: u32 = ([\d_]+);", source, re.M)
    if len(found) != 1:
        raise BenchError(f"model-service/src/lib.rs defines MAX_STREAMS_PER_CONNECTION {len(found)} times as a "
                         "u32 literal; the bench reads it from there (smsdev/bench/facts.py)")
    return int(found[0].replace("_", ""))
