# Two commands a newcomer needs: `make image` and `make test`.
# Every target installs what it needs, idempotently.

CARGO   ?= cargo
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMPS  := target/.stamps

export CARGO_TERM_COLOR ?= never

.PHONY: all build release image chart test lint unit e2e bench bench-build bench-kube run deps venv clean

all: build

## build: debug build of the whole workspace
build:
	$(CARGO) build --workspace

## release: the optimised pilot-discovery binary
release:
	$(CARGO) build --release -p pilot --bin pilot-discovery

## image: the hardened runtime and dev images of the release binary under out/ (docs/image.md)
image: release
	$(CARGO) build --release -p imagebuilder
	target/release/imagebuilder build --binary target/release/pilot-discovery --out out

## chart: package charts/istiod as out/istiod-<version>.tgz; CHART_REGISTRY=oci://host/path also pushes it (docs/deploy.md)
CHART_REGISTRY ?=
chart: venv
	@mkdir -p out
	$(PY) -c 'import sys, helm_python as h; r = h.lint("charts/istiod", strict=True, namespace="istio-system"); \
	  bad = [m for m in r["messages"] if m["severity"] >= 2] + r["errors"]; bad and sys.exit(bad); \
	  a = h.package("charts/istiod", destination="out"); print(a); \
	  sys.argv[1] and print(h.push(a, sys.argv[1]))' '$(CHART_REGISTRY)'

## run: istiod locally on the example mesh (no cluster needed)
run:
	$(CARGO) run -p pilot --bin pilot-discovery -- discovery \
	  --configDir docs/examples/mesh --registries= \
	  --grpcAddr 127.0.0.1:15010 --httpAddr 127.0.0.1:8080 --monitoringAddr 127.0.0.1:15014 \
	  --secureGRPCAddr= --httpsAddr=

## test: lint, unit tests and end-to-end tests against real peers
test: deps venv lint unit e2e

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

e2e: venv
	$(CARGO) build -p pilot --bin pilot-discovery
	PILOT_DISCOVERY=$(CURDIR)/target/debug/pilot-discovery $(PY) -m pytest -v tests

## bench: generation and push benchmarks (results: docs/performance.md)
bench:
	$(CARGO) bench -p pilot --bench generation
	$(MAKE) bench-build
	target/release/push_load --binary target/release/pilot-discovery
	$(CARGO) bench -p pilot --bench ca_signing
	for root in rsa ec; do for csr in ec rsa; do \
	  target/release/ca_load --binary target/release/pilot-discovery \
	    --clients 50 --seconds 10 --csr $$csr --root-key $$root; done; done
	$(MAKE) bench-kube

## bench-build: the release pilot-discovery and the load drivers (the `bench` crate). Two builds:
##   `bench` enables pilot's `testing` feature, which must not reach the measured binary.
bench-build:
	$(CARGO) build --release -p pilot --bin pilot-discovery
	$(CARGO) build --release -p bench

# Upstream's Go istiod, a reference binary beside the project (never part of it).
ISTIOD_GO_XZ := $(lastword $(sort $(wildcard ../shared/bin/istiod-go-*.xz)))
ISTIOD_GO    := target/$(basename $(notdir $(ISTIOD_GO_XZ)))

## bench-kube: the Kubernetes source, 1000 services, 500 ADS clients: against the fake API server,
##   then a real one (tests/kube_up.py, where a kube-apiserver binary is available), there also
##   upstream's Go istiod where ../shared/bin has it
bench-kube: bench-build
	@echo "== bench-kube: fake API server"
	target/release/kube_load --binary target/release/pilot-discovery
	@if ! python3 tests/kube_up.py check; then \
	  echo "== bench-kube: real API server SKIPPED: no kube-apiserver binary (reason above)"; exit 0; fi; \
	set -e; dir=$$(mktemp -d /tmp/bench-kube.XXXXXX); \
	trap 'python3 tests/kube_up.py down '"$$dir"'; rm -rf '"$$dir" EXIT; \
	kubeconfig=$$(python3 tests/kube_up.py up $$dir); \
	echo "== bench-kube: real API server ($$kubeconfig)"; \
	target/release/kube_load --binary target/release/pilot-discovery \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log; \
	if [ -z "$(ISTIOD_GO_XZ)" ]; then \
	  echo "== bench-kube: upstream Go istiod SKIPPED: no ../shared/bin/istiod-go-*.xz"; exit 0; fi; \
	[ $(ISTIOD_GO) -nt $(ISTIOD_GO_XZ) ] || { xz -dc $(ISTIOD_GO_XZ) > $(ISTIOD_GO).tmp && \
	  chmod +x $(ISTIOD_GO).tmp && mv $(ISTIOD_GO).tmp $(ISTIOD_GO); }; \
	echo "== bench-kube: upstream Go istiod ($(ISTIOD_GO)), same real API server"; \
	target/release/kube_load --binary $(ISTIOD_GO) --upstream \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log || \
	  echo "== bench-kube: upstream Go istiod run FAILED (reason above); ours is unaffected"

## deps: Debian packages the tests use
deps: $(STAMPS)/deps
$(STAMPS)/deps: scripts/install-deps.sh
	bash scripts/install-deps.sh
	@mkdir -p $(STAMPS) && touch $@

## venv: Python peers for the end-to-end tests
venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r tests/requirements.txt
	@touch $@

clean:
	$(CARGO) clean
	rm -rf $(VENV) out
