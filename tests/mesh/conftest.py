"""Fixtures: the local mesh (started once, upgraded live per scenario) and a client.
Every process is stopped by PID when the session ends."""

from __future__ import annotations

import pytest

from harness import OUT, Client, Stack


def pytest_terminal_summary(terminalreporter):
    """The measured figures (split shares, flips, shadow share, errors), before the
    closing `N passed` line."""
    figures = OUT / "figures.txt"
    if figures.exists():
        terminalreporter.write_sep("-", "mesh figures")
        for line in figures.read_text().splitlines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def mesh(stack):
    """mesh(*sets): the running mesh brought to the chart rendered with these --set values
    (started by the first call, then upgraded live: Istio pushes the new configuration)."""
    return stack.use


@pytest.fixture(scope="session")
def client(stack):
    c = Client(stack.gateway)
    try:
        yield c
    finally:
        c.close()
