# Two commands a newcomer needs: `make image` and `make test`.
# Every target installs what it needs, idempotently.

CARGO   ?= cargo
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMPS  := target/.stamps
# Where cargo puts what it builds.
TARGET  := $(or $(CARGO_TARGET_DIR),target)

export CARGO_TERM_COLOR ?= never

.PHONY: all build release image chart test lint unit e2e bench bench-build bench-kube bench-churn bench-stalled bench-scan run deps venv clean

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
	$(TARGET)/release/push_load --binary $(TARGET)/release/pilot-discovery
	$(TARGET)/release/push_load --binary $(TARGET)/release/pilot-discovery --authz-policies 100
	$(CARGO) bench -p pilot --bench ca_signing
	for root in rsa ec; do for csr in ec rsa; do \
	  $(TARGET)/release/ca_load --binary $(TARGET)/release/pilot-discovery \
	    --clients 50 --seconds 10 --csr $$csr --root-key $$root; done; done
	$(MAKE) bench-kube
	$(MAKE) bench-stalled
	$(MAKE) bench-churn
	$(MAKE) bench-scan

## bench-build: the release pilot-discovery and the load drivers (the `bench` crate). Two builds:
##   `bench` enables pilot's `testing` feature, which must not reach the measured binary.
bench-build:
	$(CARGO) build --release -p pilot --bin pilot-discovery
	$(CARGO) build --release -p bench

# Upstream's Go istiod, a reference binary beside the project (never part of it).
ISTIOD_GO_XZ := $(lastword $(sort $(wildcard ../shared/bin/istiod-go-*.xz)))
ISTIOD_GO    := $(TARGET)/$(basename $(notdir $(ISTIOD_GO_XZ)))
# Shell: decompresses it into $(TARGET) unless already there.
UNPACK_ISTIOD_GO = [ $(ISTIOD_GO) -nt $(ISTIOD_GO_XZ) ] || { xz -dc $(ISTIOD_GO_XZ) > $(ISTIOD_GO).tmp && \
	  chmod +x $(ISTIOD_GO).tmp && mv $(ISTIOD_GO).tmp $(ISTIOD_GO); }

## bench-kube: the Kubernetes source, 1000 services, 500 ADS clients: against the fake API server,
##   then a real one (tests/kube_up.py, where a kube-apiserver binary is available), there also
##   upstream's Go istiod where ../shared/bin has it; then both again on a secured mesh
bench-kube: deps bench-build
	@echo "== bench-kube: fake API server"
	$(TARGET)/release/kube_load --binary $(TARGET)/release/pilot-discovery
	@if ! python3 tests/kube_up.py check; then \
	  echo "== bench-kube: real API server SKIPPED: no kube-apiserver binary (reason above)"; exit 0; fi; \
	set -e; dir=$$(mktemp -d /tmp/bench-kube.XXXXXX); \
	trap 'python3 tests/kube_up.py down '"$$dir"'; rm -rf '"$$dir" EXIT; \
	kubeconfig=$$(python3 tests/kube_up.py up $$dir); \
	echo "== bench-kube: real API server ($$kubeconfig)"; \
	$(TARGET)/release/kube_load --binary $(TARGET)/release/pilot-discovery \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log; \
	if [ -z "$(ISTIOD_GO_XZ)" ]; then \
	  echo "== bench-kube: upstream Go istiod SKIPPED: no ../shared/bin/istiod-go-*.xz"; exit 0; fi; \
	$(UNPACK_ISTIOD_GO); \
	echo "== bench-kube: upstream Go istiod ($(ISTIOD_GO)), same real API server"; \
	$(TARGET)/release/kube_load --binary $(ISTIOD_GO) --upstream \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log || \
	  echo "== bench-kube: upstream Go istiod run FAILED (reason above); ours is unaffected"; \
	echo "== bench-kube: secured mesh (STRICT mTLS, 100 AuthorizationPolicies), ours then upstream's"; \
	$(TARGET)/release/kube_load --binary $(TARGET)/release/pilot-discovery \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log --authz-policies 100; \
	$(TARGET)/release/kube_load --binary $(ISTIOD_GO) --upstream --authz-policies 100 \
	  --kubeconfig $$kubeconfig --audit-log $$dir/audit.log || \
	  echo "== bench-kube: upstream Go istiod secured run FAILED (reason above); ours is unaffected"

## bench-churn: 2000 sidecars, each on its own connection, dropped and replaced at random for
##   CHURN_SECONDS (600) while the config changes every 5 s: RSS, tasks alive, and whether the last
##   push reaches all; ours, then upstream's Go istiod, on one real API server (tests/kube_up.py);
##   without an API server binary, ours alone with --configDir
CHURN_SECONDS ?= 600
bench-churn: deps bench-build
	@if ! python3 tests/kube_up.py check; then \
	  echo "== bench-churn: ours with --configDir; upstream SKIPPED (it needs an API server for 1000 services)"; \
	  exec $(TARGET)/release/churn_load --binary $(TARGET)/release/pilot-discovery --duration $(CHURN_SECONDS); fi; \
	set -e; dir=$$(mktemp -d /tmp/bench-churn.XXXXXX); \
	trap 'python3 tests/kube_up.py down '"$$dir"'; rm -rf '"$$dir" EXIT; \
	kubeconfig=$$(python3 tests/kube_up.py up $$dir); \
	echo "== bench-churn: ours, real API server ($$kubeconfig)"; \
	$(TARGET)/release/churn_load --binary $(TARGET)/release/pilot-discovery \
	  --kubeconfig $$kubeconfig --duration $(CHURN_SECONDS); \
	if [ -z "$(ISTIOD_GO_XZ)" ]; then \
	  echo "== bench-churn: upstream Go istiod SKIPPED: no ../shared/bin/istiod-go-*.xz"; exit 0; fi; \
	$(UNPACK_ISTIOD_GO); \
	echo "== bench-churn: upstream Go istiod ($(ISTIOD_GO)), same real API server"; \
	$(TARGET)/release/churn_load --binary $(ISTIOD_GO) --upstream \
	  --kubeconfig $$kubeconfig --duration $(CHURN_SECONDS) || \
	  echo "== bench-churn: upstream Go istiod run FAILED (reason above); ours is unaffected"

## bench-scan: `imagebuilder scan` of both variants against the RustSec database (../shared's
##   snapshot, or RUSTSEC_DB=dir) and a Debian tracker export of the real size (generated:
##   1500 source packages, 30,000 CVEs, the image's own packages among them): time and peak RSS
RUSTSEC_DB ?= ../shared/data/rustsec-advisory-db
bench-scan: deps image
	@[ -d "$(RUSTSEC_DB)/crates" ] || { echo "== bench-scan SKIPPED: no RustSec database at $(RUSTSEC_DB) (set RUSTSEC_DB)"; exit 0; }; \
	set -e; db=$(TARGET)/bench-scan; \
	python3 bench/scan/debian_tracker.py $$db --sbom out/sbom/runtime.cdx.json --sbom out/sbom/dev.cdx.json; \
	for variant in runtime dev; do \
	  echo "== bench-scan: $$variant"; \
	  /usr/bin/time -f "  $$variant: %e s wall, %U s user, %M KB peak RSS" \
	    target/release/imagebuilder scan --out out --variant $$variant --db $(RUSTSEC_DB) --db $$db \
	    --format json -o $$db/$$variant.json || [ $$? = 1 ]; \
	  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  findings:", len(r["results"]))' $$db/$$variant.json; \
	done

## bench-stalled: 30 xDS clients that never read and 2 push slots: does a healthy client still get
##   each config change? Ours and upstream's Go istiod (tests/stalled_xds.py, docs/performance.md)
bench-stalled: bench-build venv
	@for pings in "" --answer-pings; do \
	  echo "== bench-stalled: ours $$pings"; \
	  $(PY) tests/stalled_xds.py --binary $(TARGET)/release/pilot-discovery $$pings || exit 1; \
	  if [ -n "$(ISTIOD_GO_XZ)" ]; then $(UNPACK_ISTIOD_GO); \
	    echo "== bench-stalled: upstream Go istiod $$pings"; \
	    $(PY) tests/stalled_xds.py --binary $(ISTIOD_GO) --upstream $$pings || \
	      echo "== bench-stalled: upstream missed changes (above)"; fi; \
	done

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
