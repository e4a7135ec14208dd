#!/usr/bin/env bash
# The Rust workspace tests: unit tests, and integration tests that start the real
# services on 127.0.0.1 and drive them with real clients (tonic, grpcurl, HTTP).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# The verdict's tests (experiment/tests) backfill and query a real Prometheus.
apt_ensure prometheus
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
export ORT_DYLIB_PATH PATH="$tools/bin:$PATH" GRPCURL="$tools/bin/grpcurl"
exec cargo test --workspace --locked "$@"
