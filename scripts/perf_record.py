"""Writes one `make bench` run into docs/performance.md, the one home of the figures.

The document keeps two generated sections between markers: the latest run's targets (met or
not) and a history with one row per run. Everything else in the document is prose that this
leaves byte for byte. scripts/bench.py calls `record` at the end of a run that did not fail;
`python3 scripts/perf_record.py test-output/bench/bench.json` records a saved run by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

LATEST = ("<!-- make bench: latest run (generated) -->", "<!-- end of latest run -->")
HISTORY = ("<!-- make bench: history (generated, newest last) -->", "<!-- end of history -->")

# The history's columns: the headline of each part of the bench, by the target's name, so a
# row says at a glance how a run went; "-" where a run did not measure it (--only).
HEADLINES = (
    ("model v1 c16 req/s", None),
    ("model v1 / FastAPI v1", "model v1 / FastAPI v1, req/s at c16 (x)"),
    ("app / model direct %", "app v1 end to end / model v1 direct, c16, best of 3 runs each (%)"),
    ("ModelInfer / Classify %", "ModelInfer 1 row / Classify, c16, same server (%)"),
    ("ours / MLServer", "ModelInfer c16 req/s, ours / MLServer's (x)"),
    ("RSS ours / MLServer", "RSS after ModelInfer c16, ours / MLServer's process tree"),
)


def shown(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def latest_section(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"Run of {m['when']} at commit `{(m.get('commit') or 'unknown')[:10]}`, {m['cores']} cores, load "
        f"average {m['loadavg_at_start'][0]:.2f} at start, sections {', '.join(r['settings']['sections'])}, "
        f"{r['elapsed_s']:.0f} s.",
        "",
        "| part | figure | value | target | |",
        "|---|---|---|---|---|",
    ]
    for t in r["targets"]:
        information = t["target"].startswith("(information")
        mark = "" if information else ("met" if t["met"] else "**NOT met**")
        lines.append(f"| {t['part']} | {t['what']} | {shown(t['value'])} | {t['target']} | {mark} |")
    return "\n".join(lines)


def history_row(r: dict) -> str:
    by_name = {t["what"]: t["value"] for t in r["targets"]}
    rows = {row["name"]: row for row in r.get("runs", [])}
    cells = []
    for _, name in HEADLINES:
        if name is None:
            row = rows.get("model v1 gRPC c16")
            cells.append(f"{row['rps']:,.0f}" if row else "-")
        else:
            value = by_name.get(name)
            cells.append(shown(value) if value is not None else "-")
    judged = [t for t in r["targets"] if not t["target"].startswith("(information")]
    met = sum(t["met"] for t in judged)
    m = r["machine"]
    return (f"| {m['when'][:16].replace('T', ' ')} | `{(m.get('commit') or 'unknown')[:10]}` | "
            f"{','.join(r['settings']['sections'])} | {' | '.join(cells)} | {met} of {len(judged)} |")


def history_header() -> str:
    names = " | ".join(h for h, _ in HEADLINES)
    return (f"| when (UTC) | commit | sections | {names} | targets met |\n"
            f"|{'---|' * (4 + len(HEADLINES))}")


def between(text: str, markers: tuple[str, str]) -> tuple[int, int]:
    begin, end = markers
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"docs/performance.md lost its markers {begin!r} ... {end!r}")
    return i + len(begin), j


def update(text: str, r: dict) -> str:
    """The document with the run as its latest and as the last history row (once: recording
    the same run again replaces its row)."""
    i, j = between(text, LATEST)
    text = f"{text[:i]}\n{latest_section(r)}\n{text[j:]}"
    i, j = between(text, HISTORY)
    row = history_row(r)
    key = row.split(" | ")[:2]  # when and commit
    rows = [line for line in text[i:j].strip().splitlines()[2:] if line.split(" | ")[:2] != key]
    body = "\n".join([history_header(), *rows, row])
    return f"{text[:i]}\n{body}\n{text[j:]}"


def record(r: dict, doc: Path = DOC) -> None:
    doc.write_text(update(doc.read_text(), r))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/perf_record.py BENCH_JSON")
    result = json.loads(Path(sys.argv[1]).read_text())
    if result.get("error"):
        sys.exit(f"not recorded: that run failed ({result['error']})")
    record(result)
    print(f"recorded in {DOC.relative_to(Path.cwd()) if DOC.is_relative_to(Path.cwd()) else DOC}")
