#!/usr/bin/env bash
# `make run`: the whole system on this machine with the bundled models, as local
# processes (no cluster): model v1 on :8081 (metrics :9464) and the app on :8080.
# Ctrl-C stops everything this script started (by PID).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH MODEL_ROOT="${MODEL_ROOT:-$ROOT/models}"
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
log "building (release)"
cargo build --release --locked --bins -q

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

MODEL_PORT="${MODEL_PORT:-8081}" APP_PORT="${APP_PORT:-8080}" MODEL_METRICS_PORT="${MODEL_METRICS_PORT:-9464}"
GRPC_ADDR="127.0.0.1:$MODEL_PORT" METRICS_ADDR="127.0.0.1:$MODEL_METRICS_PORT" \
  target/release/model-service & pids+=($!)

if [ -x target/release/app-service ]; then
  HTTP_ADDR="127.0.0.1:$APP_PORT" MODEL_HOST="http://127.0.0.1:$MODEL_PORT" \
    target/release/app-service & pids+=($!)
fi

sleep 1
cat <<MSG

  SMS spam detection is running (Ctrl-C stops it):
$( [ -x target/release/app-service ] && printf '    web UI        http://127.0.0.1:%s/sms/\n    app metrics   http://127.0.0.1:%s/metrics\n' "$APP_PORT" "$APP_PORT")
    model gRPC    127.0.0.1:$MODEL_PORT   e.g.
      ${tools#"$ROOT"/}/bin/grpcurl -plaintext -d '{"text":"WIN a free prize now!"}' 127.0.0.1:$MODEL_PORT sms.v1.SpamClassifier/Classify
    model metrics http://127.0.0.1:$MODEL_METRICS_PORT/metrics

MSG
wait -n "${pids[@]}"
