#!/usr/bin/env bash
# Observability tests: the alert rules (promtool check + unit tests), the
# dashboards and rules against docs/contracts.md (the dashboards' JSON is what their code
# in grafana/dashboards/src/ generates), then the real services scraped by a
# real Prometheus (every panel and alert query), Alertmanager e-mail through an SMTP sink,
# one trace id in both services' logs, both services' OTLP export to a real receiver, and
# the SLOs (the committed rules are Sloth's output; a real 5xx burst pages).
# Installs what it needs when missing; exits non-zero on any failure; a missing tool is a
# failure, not a skip. Extra arguments go to pytest (e.g. -k alerting).
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"

apt_ensure prometheus prometheus-alertmanager
venv="$(venv_ensure observability tests/observability/requirements.txt)"

# The services under test. A build failure does not stop the suite: the tests that need
# the binaries then fail and say so, and the static tests still report.
if cargo build -q --locked -p model-service -p app-service >&2; then
  log "built target/debug/model-service and target/debug/app-service"
else
  log "cargo build -p model-service -p app-service FAILED: the service tests will fail"
fi
if ort="$(scripts/ensure-ort.sh)"; then
  export ORT_DYLIB_PATH="$ort"
else
  log "scripts/ensure-ort.sh FAILED: the model service cannot start"
fi

# Sloth, which test_slo.py runs on the SLO spec (a Go build, ~2 min the first time):
# built here so that no test waits for it.
scripts/ensure-sloth.sh >/dev/null || log "scripts/ensure-sloth.sh FAILED: the SLO tests will fail"
# Grafana's Foundation SDK, with which test_dashboards.py regenerates the dashboards
# (grafana/dashboards/src/generate.sh, `make dashboards`, uses the same virtualenv).
venv_ensure dashboards grafana/dashboards/src/requirements.txt >/dev/null

cd tests/observability
exec "$venv/bin/python" -m pytest -p no:cacheprovider --timeout=300 -ra "$@" \
  test_rules.py test_dashboards.py test_prometheus.py test_alerting.py test_tracing.py \
  test_model_down.py test_otlp.py test_slo.py
