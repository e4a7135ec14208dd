"""What a supervisor prints for its user. Standard library only."""

from __future__ import annotations

import sys


def say(text: str, stream=None) -> None:
    """A line for the user. The terminal may be gone (closed: SIGHUP, then EIO on write):
    nothing a supervisor prints may keep it from stopping its processes."""
    try:
        print(text, file=stream or sys.stderr, flush=True)
    except OSError:
        pass


def log(msg: str) -> None:
    """A supervisor's progress line (`==> ...`, to stderr); never fails, as `say`."""
    say(f"==> {msg}")
