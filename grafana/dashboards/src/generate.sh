#!/usr/bin/env bash
# Writes the dashboards that grafana/dashboards/src/ builds to OUT_DIR (default:
# grafana/dashboards/, the committed files the chart ships and the tests load), with
# Grafana's Foundation SDK pinned in requirements.txt here (installed into .venv/dashboards
# when missing). tests/observability fails when the committed files differ from what
# this writes. Edit the code, not the JSON.
#
#   grafana/dashboards/src/generate.sh [OUT_DIR]      (make dashboards)
source "$(dirname "$0")/../../../scripts/lib.sh"

venv="$(venv_ensure dashboards "$ROOT/grafana/dashboards/src/requirements.txt")"
# -B: no __pycache__ next to the sources
exec "$venv/bin/python" -B "$ROOT/grafana/dashboards/src/generate.py" "$@"
