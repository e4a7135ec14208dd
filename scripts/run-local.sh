#!/usr/bin/env bash
# `make run`: the whole system on this machine with the bundled models, as local
# processes (no cluster): model v1 on :8081 (metrics :9464) and the app on :8080, started
# and watched by smsdev.run (tooling/smsdev/run.py; the services as smsdev.stack describes them). Ctrl-C, SIGTERM
# or closing the terminal (SIGHUP) stops everything it started, by PID; its processes die
# with it even when it is killed (kill -9), and the next start cleans up after such a run
# and says so. Ports: APP_PORT, MODEL_PORT, MODEL_METRICS_PORT, MODEL_INFERENCE_PORT (the
# Open Inference Protocol over HTTP, 8082); RUN_DIR (.cache/run: logs,
# lock, process list); RUN_PROFILE=debug runs debug builds.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
case "${RUN_PROFILE:-release}" in
  release) log "building (release; the first build takes a few minutes)"
           cargo build --release --locked -p model-service -p app-service ;;
  debug) cargo build --locked -p model-service -p app-service ;;
  *) die "RUN_PROFILE must be release or debug" ;;
esac
exec "$tools/bin/python" -m smsdev.run --profile "${RUN_PROFILE:-release}" --app-port "${APP_PORT:-8080}" \
  --model-port "${MODEL_PORT:-8081}" --metrics-port "${MODEL_METRICS_PORT:-9464}" \
  --inference-port "${MODEL_INFERENCE_PORT:-8082}" --log-dir "${RUN_DIR:-.cache/run}" \
  --grpcurl "${tools#"$ROOT"/}/bin/grpcurl"
