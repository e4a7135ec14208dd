#!/usr/bin/env bash
# The repository's own rules: the README stays a front door, facts have one home (the
# decision thresholds, the ONNX Runtime version), benchmark figures have one
# home (docs/performance.md, written by make bench through tooling/smsdev/bench/record.py), and no
# file refers to the issue tracker's numbers, which are not part of the repository.
source "$(dirname "$0")/../../scripts/lib.sh"
venv="$(venv_ensure house "$ROOT/tests/house/requirements.txt")"
cd "$ROOT"
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/house
