#!/usr/bin/env bash
# `make bench`: installs what the bench needs when it is missing (h2load from
# nghttp2-client, wrk, the FastAPI and MLServer comparisons' pinned virtualenvs, ONNX Runtime), builds the
# release binaries and the in-process benches, then runs the bench (tooling/smsdev/bench/, a
# module of the project's tooling, installed editable into the bench's virtualenv), which
# starts every service through tooling/smsdev/stack.py, measures, prints the targets met or not
# and writes test-output/bench/bench.json. Arguments go to `python -m smsdev.bench` (e.g.
# --duration 2 --only ready).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
apt_ensure nghttp2-client wrk curl
BENCH_VENV="$(venv_ensure bench "$ROOT/bench/requirements.txt")"
# Seldon's MLServer for the Open Inference Protocol comparison, in a venv of its own.
BENCH_MLSERVER_VENV="$(venv_ensure bench-mlserver "$ROOT/bench/mlserver/requirements.txt")"
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH BENCH_VENV BENCH_MLSERVER_VENV
log "cargo build --release (model-service, app-service) and the benches"
cargo build --release --locked -q -p model-service -p app-service
cargo bench --locked -q -p model-service --no-run
exec "$BENCH_VENV/bin/python" -m smsdev.bench "$@"
