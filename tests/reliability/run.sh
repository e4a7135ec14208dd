#!/usr/bin/env bash
# The services as processes under stress: idle and half-open connections are
# closed within the idle timeout, SIGTERM ends within its bound whatever clients hold, a
# stalled, killed and restarted model gives users only 200s and 503s, and a process that
# cannot start says why in one line; `make run` leaves nothing behind when its terminal
# closes or it is killed. Real binaries on 127.0.0.1, started through
# tooling/smsdev/stack.py and stopped by PID. Extra arguments go to pytest.
source "$(dirname "$0")/../../scripts/lib.sh"
venv="$(venv_ensure reliability "$ROOT/tests/reliability/requirements.txt")"
cd "$ROOT"
services_ensure
mkdir -p test-output/reliability
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q -ra tests/reliability "$@"
