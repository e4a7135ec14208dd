#!/usr/bin/env bash
# The Rust workspace: its layout (cargo fmt), unit tests, and integration tests that start the real
# services on 127.0.0.1 and drive them with real clients (tonic, grpcurl, HTTP).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# The verdict's tests (experiment/tests) backfill and query a real Prometheus.
apt_ensure prometheus
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
export ORT_DYLIB_PATH PATH="$tools/bin:$PATH" GRPCURL="$tools/bin/grpcurl"
# One layout for every file (rustfmt.toml): a diff here fails the area before any test runs.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
log "cargo fmt --check"
cargo fmt --all --check
exec cargo test --workspace --locked "$@"
