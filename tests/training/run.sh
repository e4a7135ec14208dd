#!/usr/bin/env bash
# Training tests: ONNX Runtime reproduces scikit-learn on every test-split row, and the
# committed models/ are byte-for-byte what training produces.
source "$(dirname "$0")/../../scripts/lib.sh"
venv="$(venv_ensure training "$ROOT/training/requirements.txt")"
cd "$ROOT/training"
PYTHONWARNINGS=ignore "$venv/bin/python" -m pytest -p no:cacheprovider -q -s test_parity.py
