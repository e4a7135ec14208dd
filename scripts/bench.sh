#!/usr/bin/env bash
# `make bench`: 1) the model service's throughput/latency/memory, serving designs compared
# in one run (cargo bench); 2) the cost of recording one request's metrics, the previous
# pipeline (prometheus crate) against the OpenTelemetry one, in the same run; 3) the whole
# HTTP path with wrk: app v1 (cache off) against app v2 (cache on) in front of the same
# model (scripts/bench_http.py), the canary's performance hypothesis.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
apt_ensure wrk
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH
cargo bench --locked -q -p model-service --bench serving --bench metrics

cargo build --release --locked -q -p model-service -p app-service
python3 scripts/bench_http.py
