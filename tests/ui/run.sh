#!/usr/bin/env bash
# Browser tests of the web UI: real Chromium (headless, through chromedriver) against the
# real app and model services on 127.0.0.1. Screenshots go to test-output/ui/.
source "$(dirname "$0")/../../scripts/lib.sh"
apt_ensure chromium chromium-driver
command -v chromium >/dev/null || die "chromium is not installed"
command -v chromedriver >/dev/null || die "chromedriver is not installed"
venv="$(venv_ensure ui "$ROOT/tests/ui/requirements.txt")"
cd "$ROOT"
services_ensure
mkdir -p test-output/ui
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/ui "$@"
