# sluice: the two commands of the README quick start are `make run` and `make test`.
# Both install what a fresh Debian machine with only the Rust toolchain lacks (cmake,
# needed by Pingora's zlib-ng build).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps test-deps build run test fuzz bench lint clean

## Install the system packages the build needs (only those missing).
deps:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "installing cmake (needed to build Pingora)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; }
	@command -v cc >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential; }

## What the tests need besides: a headless browser for the status page test, and Redis for
## the fleet rate limit tests.
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (the status page test loads the page in it)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server (the fleet rate limit tests start their own on loopback ports)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

build: deps
	$(CARGO) build --release --bins

## Start two demo backends and sluice with conf/sluice.yaml in the foreground (Ctrl-C stops all).
## The backends outlive a graceful upgrade by hand (README, "Binary upgrade"): see conf/run-demo.sh.
run: build
	@conf/run-demo.sh

## Run the whole test suite: the check that the vendored Pingora is pristine 0.9.1 plus
## third_party/pingora/patches, unit tests and integration tests against the real binary,
## then each benchmark once as a smoke test (criterion's test mode takes no libtest flags).
test: deps test-deps
	third_party/pingora/check.sh
	$(CARGO) test --lib --bins --tests -- --test-threads=4
	$(CARGO) test --benches

## The property tests (request path, config loader, hash keys, routing) with 2,000 cases
## instead of the 48-64 of `make test`.
fuzz: deps
	SLUICE_FUZZ_CASES=2000 $(CARGO) test --test request_fuzz --test model_properties -- --nocapture

bench: build
	bench/compare.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
