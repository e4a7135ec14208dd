"""What every part of the bench shares: the message it sends, the calls it makes, its
sections, the error that fails it, and the small arithmetic of its figures."""

from __future__ import annotations

import json
import re

from smsdev import stack as local

ROOT = local.ROOT
# 84 characters, normalized: the message of training/profile.py and benches/ort.rs.
MESSAGE = "WINNER!! You have won a 1000 cash prize. To claim call 09061701461 now. T&C apply 18"
BODY = json.dumps({"sms": MESSAGE})
CLASSIFY = "/sms.v1.SpamClassifier/Classify"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SECTIONS = ("ort", "metrics", "ready", "throughput", "shadow", "overload", "oip")
# The model's logging as the chart sets it, and the quietest, for the logging's cost.
CHART_MODEL_LOGGING = {"RUST_LOG": "info", "LOG_FORMAT": "json"}
AT_WARN = {"RUST_LOG": "warn", "LOG_FORMAT": "text"}


class BenchError(AssertionError):
    """Something that makes the figures wrong or shows a defect: the bench fails."""


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    """Counters' growth between two reads, by key; keys that did not grow are left out."""
    return {k: int(v - before.get(k, 0)) for k, v in sorted(after.items()) if int(v - before.get(k, 0))}


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def to_ms(value: str) -> float:
    """A duration as wrk and h2load print it (`812.5us`, `1.2ms`, `2s`) in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise BenchError(f"unexpected duration {value!r} in a load generator's output")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[m.group(2)]
