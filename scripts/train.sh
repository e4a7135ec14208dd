#!/usr/bin/env bash
# `make models`: retrain models/v1 and models/v2 (reproducible; see training/README.md).
source "$(dirname "$0")/lib.sh"
venv="$(venv_ensure training "$ROOT/training/requirements.txt")"
PYTHONWARNINGS=ignore "$venv/bin/python" "$ROOT/training/train.py" "$@"
