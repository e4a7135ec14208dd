#!/usr/bin/env bash
# The Open Inference Protocol with its users' own clients: Triton's
# (tritonclient[grpc,http]) and KServe's Python SDK over gRPC and HTTP against the real
# model service on 127.0.0.1 (started through tooling/smsdev/stack.py, stopped by PID), and
# grpcurl without a .proto file in two releases: 1.9 (asks reflection v1) and 1.8
# (v1alpha). Extra arguments go to pytest.
source "$(dirname "$0")/../../scripts/lib.sh"
venv="$(venv_ensure protocol "$ROOT/tests/protocol/requirements.txt")"
grpcurl_v1="$(grpcurl_v1_ensure)"
tools="$(venv_ensure tools "$ROOT/tests/tools/requirements.txt")"
export GRPCURL_V1="$grpcurl_v1" GRPCURL_V1ALPHA="$tools/bin/grpcurl"
cd "$ROOT"
services_ensure
mkdir -p test-output/protocol
# tritonclient and KServe's SDK each register the `inference` protobuf package: one process each.
rc=0
"$venv/bin/python" -m pytest -p no:cacheprovider -q -ra tests/protocol/test_triton.py tests/protocol/test_grpcurl.py \
  "$@" || rc=1
"$venv/bin/python" -m pytest -p no:cacheprovider -q -ra tests/protocol/test_kserve.py \
  tests/protocol/test_bad_input.py tests/protocol/test_shadow.py "$@" || rc=1
exit "$rc"
