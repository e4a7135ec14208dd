"""Fixtures: the four services (started once) and Envoy per scenario (restarted only when
the values change). Every process is stopped by PID when the session ends."""

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
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def mesh(stack):
    """mesh(*sets): Envoy running the chart rendered with these --set values."""
    current: list = [None]

    def use(*sets: str) -> Stack:
        if current[0] != sets or not (stack.envoy_proc and stack.envoy_proc.alive()):
            stack.envoy(*sets)
            current[0] = sets
        return stack

    return use


@pytest.fixture(scope="session")
def client(stack):
    c = Client(stack.gateway)
    try:
        yield c
    finally:
        c.close()
