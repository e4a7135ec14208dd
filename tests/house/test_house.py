"""The repository's own rules, on the tracked files of this checkout."""

from __future__ import annotations

import copy
import re

from repository import ROOT, tracked_text_files
from smsdev.bench import record


# "issue" or "issues" and a number, any case, "#" or not; another project's issues
# (istio/istio#9764, kserve/kserve#3099) are references a reader can follow, and stay.
ISSUE_NUMBER = re.compile(r"\bissues? #?\d+", re.IGNORECASE)


def test_no_file_refers_to_the_trackers_issue_numbers():
    found = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for name, text in tracked_text_files() for m in ISSUE_NUMBER.finditer(text)]
    assert not found, "the issues are not part of the repository; say what is meant instead:\n" + "\n".join(found)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    lines = readme.count("\n")
    assert lines <= 200, f"README.md has {lines} lines: what it is, the two commands, what runs, where to go next"
    for target in ("docs/performance.md", "docs/contracts.md", "docs/helm.md"):
        assert f"]({target})" in readme, f"the README links no {target}"
    # Benchmark figures live in docs/performance.md: none in the README.
    figures = re.findall(r"[\d,.]+ (?:req/s|µs|us|ms a|MiB after|rows/s)", readme)
    assert not figures, figures


def a_run(when="2026-12-07T10:00:00+00:00", commit="0123456789abcdef", rps=20000.0, met=True) -> dict:
    return {
        "machine": {"cores": 2, "loadavg_at_start": [0.5, 0.4, 0.3], "when": when, "commit": commit},
        "settings": {"sections": ["throughput", "oip"]},
        "elapsed_s": 61.0,
        "runs": [{"name": "model v1 gRPC c16", "rps": rps}],
        "targets": [
            {"part": "serving", "what": "model v1 / FastAPI v1, req/s at c16 (x)", "value": 3.3, "target": ">= 2.5",
             "met": met, "unit": ""},
            {"part": "protocol", "what": "ModelInfer 64 rows c1 (rows/s)", "value": 36700.0,
             "target": "(information)", "met": True, "unit": ""},
        ],
    }


def test_a_bench_run_is_recorded_in_the_performance_document():
    doc = (ROOT / "docs" / "performance.md").read_text()
    first = record.update(doc, a_run())
    # The prose around the generated sections is left byte for byte.
    outside = lambda text: [text[:text.index(record.LATEST[0])],
                            text[text.index(record.LATEST[1]):text.index(record.HISTORY[0])],
                            text[text.index(record.HISTORY[1]):]]
    assert outside(first) == outside(doc)
    latest = first[first.index(record.LATEST[0]):first.index(record.LATEST[1])]
    assert "| serving | model v1 / FastAPI v1, req/s at c16 (x) | 3.30 | >= 2.5 | met |" in latest
    assert "| protocol | ModelInfer 64 rows c1 (rows/s) | 36,700.00 | (information) |  |" in latest
    rows_before = doc.count("\n| 20")  # history rows start with the year

    # The same run recorded again replaces its row; a later run adds one, newest last.
    again = record.update(first, a_run())
    assert again == first
    later = record.update(first, a_run(when="2026-12-08T09:00:00+00:00", commit="fedcba9876543210",
                                            rps=18000.0, met=False))
    history = later[later.index(record.HISTORY[0]):later.index(record.HISTORY[1])]
    rows = [line for line in history.splitlines() if line.startswith("| 20")]
    assert len(rows) == rows_before + 2
    assert rows[-2].startswith("| 2026-12-07 10:00 | `0123456789` | throughput,oip | 20,000 | 3.30 |")
    assert rows[-1].startswith("| 2026-12-08 09:00 | `fedcba9876` |") and rows[-1].endswith("| 0 of 1 |")
    assert "**NOT met**" in later[later.index(record.LATEST[0]):]


def test_a_document_that_lost_its_markers_is_refused():
    doc = (ROOT / "docs" / "performance.md").read_text().replace(record.HISTORY[1], "")
    try:
        record.update(doc, copy.deepcopy(a_run()))
    except ValueError as e:
        assert "lost its markers" in str(e)
    else:
        raise AssertionError("a document without its history's end marker was written into")


def test_the_onnx_runtime_version_has_one_home():
    """scripts/ensure-ort.sh names the version the services load; the Python pins (training,
    the bench's comparisons) and the texts that name it agree with it."""
    (version,) = re.findall(r'^ORT_VERSION="([\d.]+)"$', (ROOT / "scripts" / "ensure-ort.sh").read_text(), re.M)
    minor = version.rsplit(".", 1)[0]
    seen = []
    for name, text in tracked_text_files():
        for m in re.finditer(r"onnxruntime==([\d.]+)|ONNX Runtime (\d+\.\d+(?:\.\d+)?)\b|libonnxruntime(?:\.so)? (\d+\.\d+(?:\.\d+)?)", text):
            found = next(g for g in m.groups() if g)
            seen.append(name)
            assert found in (version, minor), f"{name}: {m.group(0)}, but scripts/ensure-ort.sh has {version}"
    assert {"training/requirements.txt", "bench/requirements.txt", "model-service/src/model.rs"} <= set(seen), seen
