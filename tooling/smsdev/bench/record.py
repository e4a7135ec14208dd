"""Writes one `make bench` run into docs/performance.md, the one home of the figures.

The document keeps two generated sections between markers: the latest run's targets (met or
not) and a history with one row per run. Everything else in the document is prose that this
leaves byte for byte. The CLI calls `record` at the end of a run that did not fail;
`.venv/bench/bin/python -m smsdev.bench.record test-output/bench/bench.json` records a saved
run by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .report import informational, shown

# tooling/smsdev/bench/record.py, installed editable: the checkout's docs/
DOC = Path(__file__).resolve().parents[3] / "docs" / "performance.md"

LATEST = ("<!-- make bench: latest run (generated) -->", "<!-- end of latest run -->")
HISTORY = ("<!-- make bench: history (generated, newest last) -->", "<!-- end of history -->")

# The history's columns: the headline of each part of the bench, by the target's name, so a
# row says at a glance how a run went; "-" where a run did not measure it (--only).
HEADLINES = (
    ("model v1 c16 req/s", None),
    ("model v1 / FastAPI v1", "model v1 / FastAPI v1, req/s at c16 (x)"),
    ("app / model direct %", "app v1 end to end / model v1 direct, c16, best of 3 runs each (%)"),
    ("ModelInfer / Classify %", "ModelInfer 1 row / Classify, c16, same server, median of pairs in turn (%)"),
    ("ours / MLServer", "ModelInfer c16 req/s, ours / MLServer's (x)"),
    ("RSS ours / MLServer", "RSS after ModelInfer c16, ours / MLServer's process tree"),
)


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
        mark = "" if informational(t) else ("met" if t["met"] else "**NOT met**")
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
    judged = [t for t in r["targets"] if not informational(t)]
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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smsdev.bench.record BENCH_JSON", file=sys.stderr)
        return 2
    result = json.loads(Path(argv[0]).read_text())
    if result.get("error"):
        print(f"not recorded: that run failed ({result['error']})", file=sys.stderr)
        return 1
    record(result)
    print(f"recorded in {DOC.relative_to(Path.cwd()) if DOC.is_relative_to(Path.cwd()) else DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
