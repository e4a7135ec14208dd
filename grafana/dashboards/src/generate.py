"""Writes the dashboards this folder's code builds as grafana/dashboards/<name>.json (or into
the folder given), the files the chart ships: Grafana's JSON as the Foundation SDK
serialises it, keys sorted, 2-space indent, a final newline, so the same code gives the
same bytes. `make dashboards` runs it with the SDK of requirements.txt.

    python grafana/dashboards/src/generate.py [OUT_DIR]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

import experiment
import operational
import shadow

DASHBOARDS = {"operational": operational.build, "experiment": experiment.build, "shadow": shadow.build}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / f"{name}.json").write_text(render(name))
        print(f"wrote {out / f'{name}.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
