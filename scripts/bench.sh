#!/usr/bin/env bash
# `make bench`: 1) the model service's throughput/latency/memory, serving designs compared
# in one run (cargo bench); 2) the whole HTTP path with wrk: app v1 (cache off) against
# app v2 (cache on) in front of the same model, the canary's performance hypothesis.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
apt_ensure wrk
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH
cargo bench --locked -q -p model-service --bench serving

cargo build --release --locked -q -p model-service -p app-service
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
model_port="$(free_port)"
GRPC_ADDR="127.0.0.1:$model_port" METRICS_ADDR="127.0.0.1:$(free_port)" MODEL_ROOT="$ROOT/models" \
  MODEL_RELOAD_SECS=0 RUST_LOG=warn target/release/model-service & pids+=($!)

echo
echo "app-service POST /sms/ over HTTP (wrk, 2 threads, 16 connections, 8 s), model v1 behind it:"
printf '%-34s %10s %9s %9s %9s\n' "app" "req/s" "p50" "p99" "RSS MiB"
for variant in "v1 cache off:false" "v2 cache on:true"; do
  name="${variant%%:*}" cache="${variant##*:}" port="$(free_port)"
  HTTP_ADDR="127.0.0.1:$port" MODEL_HOST="http://127.0.0.1:$model_port" APP_VERSION="${name%% *}" \
    CACHE_ENABLED="$cache" RUST_LOG=warn target/release/app-service & app=$!; pids+=($app)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  out="$(wrk -t2 -c16 -d8s --timeout 5s --latency -s scripts/bench-app.lua "http://127.0.0.1:$port")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1 == "50%" {print $2}' <<<"$out")" p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  rss="$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$app/status")"
  printf '%-34s %10s %9s %9s %9s\n' "$name" "$rps" "$p50" "$p99" "$rss"
  grep -q "Non-2xx" <<<"$out" && { echo "$out"; die "app $name answered errors"; }
  kill "$app"; wait "$app" 2>/dev/null || true
done
echo "reference (toolchain.md, same kind of machine, wrk c16): Flask+sklearn 333 req/s, gunicorn 2 workers 828, FastAPI+onnxruntime 2 workers 2,831"
