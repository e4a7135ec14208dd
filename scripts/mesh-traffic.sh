#!/usr/bin/env bash
# `make mesh-traffic`: labelled messages from the data set's test split replayed through the
# running `make mesh` (or `make cluster`) as many visitors (each with its own cookie jar, so
# the sticky canary cookie pins it; each message posted with its true label as the guess),
# so the experiment gathers evidence and `make experiment` reaches a verdict. Bounded: stops
# after --duration seconds or --count requests, whichever comes first. See docs/mesh.md.
#
#   scripts/mesh-traffic.sh [--duration 60] [--count 20000] [--concurrency 8] [--per-visitor 10]
#                           [--wrong-guesses 0.1] [--zipf 1] [--seed 1] [--json]
#                           [--mix split|spam-only|ham-only]
#   make mesh-traffic ARGS='--duration 120 --concurrency 16'
#   make mesh-traffic ARGS='--mix spam-only'   # a shifted mix: the drift rules' PSI > 0.2
#
# The gateway is the running cluster's (CLUSTER_DIR/access.json; --gateway URL --host NAME
# for another). The test split is exported once into .cache/data/ (scripts/ensure-test-split.sh).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
case "${1:-}" in -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

venv="$(venv_ensure cluster-run cluster/requirements.txt)"
split="$(scripts/ensure-test-split.sh)"
exec "$venv/bin/python" -m smsdev.traffic --messages "$split" "$@"
