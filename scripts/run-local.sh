#!/usr/bin/env bash
# `make run`: the whole system on this machine with the bundled models, as local
# processes (no cluster): model v1 on :8081 (metrics :9464) and the app on :8080, started
# and watched by scripts/stack.py (the one description of the local stack). Ctrl-C stops
# everything it started, by PID. Ports: APP_PORT, MODEL_PORT, MODEL_METRICS_PORT.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
log "building (release; the first build takes a few minutes)"
cargo build --release --locked -p model-service -p app-service
exec python3 scripts/stack.py run --profile release --app-port "${APP_PORT:-8080}" \
  --model-port "${MODEL_PORT:-8081}" --metrics-port "${MODEL_METRICS_PORT:-9464}" \
  --grpcurl "${tools#"$ROOT"/}/bin/grpcurl"
