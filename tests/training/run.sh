#!/usr/bin/env bash
# Training tests: ONNX Runtime reproduces scikit-learn on every test-split row, and the
# committed models/ are what training produces (same card; parameters and predictions
# within the tolerances of training/reproducible.py, on any CPU kind).
source "$(dirname "$0")/../../scripts/lib.sh"
venv="$(venv_ensure training "$ROOT/training/requirements.txt")"
cd "$ROOT/training"
PYTHONWARNINGS=ignore "$venv/bin/python" -m pytest -p no:cacheprovider -q -s test_parity.py
