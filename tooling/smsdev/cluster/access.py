"""The running cluster's access points, `access.json` in its state directory: the ingress
gateway's URL and Host and Prometheus' URL, so that another terminal
(`make mesh-traffic`, `scripts/mesh.sh upgrade`) finds the cluster that runs, whatever
ports it was given. Written once the cluster is ready, removed when it stops (the lock
says whether one runs). Standard library only."""

from __future__ import annotations

import json
from pathlib import Path

from smsdev.cluster.objects import HOST


def path(state: Path) -> Path:
    return state / "access.json"


def write(state: Path, gateway_port: int, prometheus_port: int) -> None:
    tmp = path(state).with_suffix(".tmp")
    tmp.write_text(json.dumps({"gateway": f"http://127.0.0.1:{gateway_port}", "host": HOST,
                               "prometheus": f"http://127.0.0.1:{prometheus_port}"}, indent=1) + "\n")
    tmp.replace(path(state))


def read(state: Path) -> dict | None:
    try:
        return json.loads(path(state).read_text())
    except (OSError, ValueError):
        return None


def remove(state: Path) -> None:
    path(state).unlink(missing_ok=True)
