#!/usr/bin/env bash
# `make bench`: the model service's throughput/latency/memory, designs compared in one run.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH
exec cargo bench --locked -q -p model-service --bench serving
