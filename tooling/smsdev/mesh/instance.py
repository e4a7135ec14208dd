"""The running experiment's record, `instance.json` in its run directory (MESH_DIR): its
supervisor's pid, the control API's address (for `scripts/mesh.sh upgrade`), the
gateway's and Prometheus' (for `make mesh-traffic`) and the values in force (for a second
start's refusal). Written while it runs, removed when it stops; the lock itself is the
run directory's (smsdev.runstate). Standard library only."""

from __future__ import annotations

import json
import os
from pathlib import Path

from smsdev import ROOT


def run_dir() -> Path:
    """The experiment's run directory: MESH_DIR, or .cache/mesh of the checkout."""
    return Path(os.environ.get("MESH_DIR") or ROOT / ".cache" / "mesh")


def path(run: Path) -> Path:
    return run / "instance.json"


def read(run: Path) -> dict | None:
    try:
        return json.loads(path(run).read_text())
    except (OSError, ValueError):
        return None


def write(run: Path, pid: int, control: str, gateway: str, prometheus: str, values: list[str]) -> None:
    path(run).write_text(json.dumps({"pid": pid, "control": control, "gateway": gateway, "prometheus": prometheus,
                                     "values": values}))


def remove(run: Path) -> None:
    path(run).unlink(missing_ok=True)
