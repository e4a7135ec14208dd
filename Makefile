# The task runner. `make run` and `make test` are the two commands the README leads with;
# every target installs what it needs (only when missing) through scripts/.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help run mesh cluster mesh-traffic test test-rust models bench ort experiment slo dashboards

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## run the whole system on this machine (bundled models, no cluster)
	@scripts/run-local.sh

mesh: ## the canary and shadow experiment on `make cluster`: gateway :8000, Prometheus :9090 (root; ARGS='--set K=V ...'; live: scripts/mesh.sh upgrade)
	@scripts/mesh.sh $(ARGS)

cluster: ## a real Kubernetes on this machine with the chart installed by the real helm (root; ARGS='--set K=V ...'; docs/local-cluster.md)
	@scripts/cluster.sh $(ARGS)

mesh-traffic: ## labelled test-split messages through the running cluster's gateway as many visitors with guesses (ARGS='--duration 60 --concurrency 8')
	@scripts/mesh-traffic.sh $(ARGS)

test: ## run every test (installs what the tests need)
	@scripts/test.sh

test-rust: ## Rust unit and integration tests only (real gRPC/HTTP on 127.0.0.1)
	@scripts/test.sh rust

models: ## retrain models/v1 and models/v2 from the data set (reproducible: training/README.md)
	@scripts/train.sh

experiment: ## the verdict of both experiments from Prometheus (ARGS="--prometheus URL --window 15m ...", see --help)
	@$(CARGO) run -q --locked -p sms-experiment -- $(ARGS)

bench: ## cost and limits of both tiers in one run, against FastAPI and the pre-lean artifact (~4 min; ARGS='--duration 2 ...')
	@scripts/bench.sh $(ARGS)

slo: ## regenerate grafana/rules/sms-slo.rules.yml from the SLOs in grafana/slos/ with Sloth (built when missing)
	@grafana/slos/generate.sh

dashboards: ## regenerate grafana/dashboards/*.json from their code in grafana/dashboards/src/ (Grafana's Foundation SDK)
	@grafana/dashboards/src/generate.sh

ort: ## fetch the ONNX Runtime shared library (printed path)
	@scripts/ensure-ort.sh
