"""Render the chart with the real Helm engine (Helm v4 Go SDK through helm-python-sdk, no
helm binary, no cluster), with values given as a user types them for `helm upgrade`.

  python -m smsdev.mesh.render [--set EXPR]... [-f values.yaml]... [-o rendered.yaml]

Several `--set` are merged in order, later ones winning, as Helm does; values.schema.json
and the chart's own checks are enforced (a refused value exits non-zero with Helm's
message). The output is the multi-document YAML of every template but NOTES.txt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as helm
import yaml

from smsdev import ROOT

CHART = ROOT / "helm"
RELEASE = "sms-app"
NAMESPACE = "sms-app"


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def values_from(sets: list[str] = (), files: list[str] = ()) -> dict:
    values: dict = {}
    for f in files:
        values = merge(values, yaml.safe_load(Path(f).read_text()) or {})
    for expr in sets:
        values = merge(values, helm.parse_set_string(expr))
    return values


def render(values: dict | None = None, chart: Path = CHART, release: str = RELEASE,
           namespace: str = NAMESPACE) -> str:
    helm.disable_logging()
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(values or {}, name=release, namespace=namespace)
    return "\n---\n".join(
        f"# Source: {k}\n{v.strip()}" for k, v in sorted(manifests.items()) if not k.endswith("NOTES.txt")
    ) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="render the chart with the Helm engine")
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("-f", "--values", action="append", default=[], dest="files")
    p.add_argument("-o", "--output", default="-")
    a = p.parse_args(argv)
    try:
        text = render(values_from(a.sets, a.files))
    except helm.HelmError as err:
        print(f"render: helm refused the values: {err}", file=sys.stderr)
        return 2
    if a.output == "-":
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
