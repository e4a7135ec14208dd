"""Fixtures: a stack of real processes (smsdev.stack, smsdev.procs), stopped by PID after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsdev import procs  # processes followed by PID, free ports, polling
from smsdev import stack as local  # the one description of the local stack

ROOT = Path(__file__).resolve().parents[2]

OUT = ROOT / "test-output" / "reliability"


@pytest.fixture
def stack(request):
    s = local.Stack(OUT / request.node.name)
    try:
        yield s
    finally:
        s.stop_all()


def addr() -> str:
    return f"127.0.0.1:{procs.free_port()}"


def figure(line: str):
    """A measured figure: printed, and collected for the summary."""
    print(line)
    with open(OUT / "figures.txt", "a") as f:
        f.write(line + "\n")


def pytest_sessionstart(session):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "figures.txt").write_text("")


def pytest_terminal_summary(terminalreporter):
    figures = OUT / "figures.txt"
    if figures.exists() and figures.read_text().strip():
        terminalreporter.write_sep("-", "reliability figures")
        for line in figures.read_text().splitlines():
            terminalreporter.write_line(line)
