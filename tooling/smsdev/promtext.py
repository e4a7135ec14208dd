"""The Prometheus text exposition format (version 0.0.4), as the services' /metrics pages
write it: the one parser of those pages for the bench, the supervisors and the suites.

Only what a scrape returns: Prometheus' HTTP API answers JSON, which its readers take
as JSON. A sample line that does not parse is an error naming the line, never a sample
silently skipped: a page the parser misreads would otherwise read as a counter at 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# name, optional {labels}, value, optional timestamp (ms)
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
# one label pair and its separator; the value's escapes are \\, \" and \n
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


class ParseError(ValueError):
    """A line of a metrics page that is not a comment, blank or a sample."""


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(text: str, line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text.rstrip(" \t")):
        m = _LABEL.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"labels that do not parse: {line!r}")
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return out


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a page, in order. Comments (# HELP,
    # TYPE, # EOF) and blank lines are skipped; values may be NaN or +Inf/-Inf."""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _SAMPLE.fullmatch(line.strip())
        if not m:
            raise ParseError(f"not a sample: {line!r}")
        try:
            value = float(m.group(3))
        except ValueError:
            raise ParseError(f"not a sample value: {line!r}") from None
        yield m.group(1), _labels(m.group(2) or "", line), value


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for n, have, v in samples(text)
               if n == name and all(have.get(k) == want for k, want in labels.items()))


def by_label(text: str, name: str, label: str, **match: str) -> dict[str, float]:
    """The samples of `name` whose labels include `match`, summed by the value of `label`
    ("" for samples without it)."""
    out: dict[str, float] = {}
    for n, have, v in samples(text):
        if n == name and all(have.get(k) == want for k, want in match.items()):
            key = have.get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out
