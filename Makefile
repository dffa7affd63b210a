# mend — the two commands a fresh machine needs are `make demo` and `make test`.
# Everything they need is installed on first use (Apache Kafka's jars from
# Maven Central, PostgreSQL, a Python virtual environment under .mend/) and
# reused afterwards.

SHELL := /bin/bash
TOOLS ?= $(HOME)/.cache/mend
# Build outside the checkout so a fresh clone reuses the compiled dependencies.
export CARGO_TARGET_DIR ?= $(TOOLS)/target
VENV := .mend/venv

.PHONY: all build test unit-test integration-test demo infra-up infra-down infra-reset venv fuzz fuzz-targets fuzz-props fuzz-guard fuzz-values bench peers bench-peers fmt lint clean

all: build

build:
	cargo build --workspace

## infra-up: start the broker, PostgreSQL and the schema registry (idempotent)
infra-up:
	infra/up.sh

## infra-down: stop them
infra-down:
	infra/down.sh

## infra-reset: stop, then forget the local broker's state (topics, groups,
## registry, the warehouse is kept): a clean start
infra-reset: infra-down
	rm -rf .mend/kafka

## venv: the third-party clients tests drive mend with: Python's
## (confluent-kafka, dbt, the MCP SDK) and the MCP Inspector CLI (Node)
INSPECTOR := .mend/node/node_modules/.bin/mcp-inspector
# The console's browser tests: playwright-core from npm (the lock file's
# version, never a downloaded browser) and Debian's Chromium.
PLAYWRIGHT := .mend/browser/node_modules/playwright-core/package.json
venv: $(VENV)/.installed $(INSPECTOR) $(PLAYWRIGHT) /usr/bin/chromium
$(PLAYWRIGHT): tests/browser/package.json tests/browser/package-lock.json
	@mkdir -p .mend/browser
	cp tests/browser/package.json tests/browser/package-lock.json .mend/browser/
	cd .mend/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci -q --no-audit --no-fund
	@touch $@
/usr/bin/chromium:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
$(VENV)/.installed: tests/python/requirements.txt
	@mkdir -p .mend
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
	@touch $@
$(INSPECTOR):
	npm install -q --prefix .mend/node --no-audit --no-fund @modelcontextprotocol/inspector@0.15.0

## test: unit tests, then integration tests against the real broker, registry
## and PostgreSQL (started here when not running, and stopped again after)
test: venv
	infra/test.sh

unit-test:
	cargo test --workspace --lib --bins

## demo: the main job on the embedded defaults
demo:
	infra/up.sh
	infra/demo.sh

## fuzz: the coverage-guided fuzz targets (cargo-fuzz and libFuzzer, under
## fuzz/; cargo-fuzz is installed once into $(TOOLS)) for FUZZ_RUNS inputs
## each, then the property tests (names fuzz_*) for FUZZ_CASES cases each
## (release; `make test` runs proptest's default 256)
FUZZ_RUNS ?= 1000000
FUZZ_CASES ?= 1000000
# Generated statements the guardrails' search proves on a real PostgreSQL
# (each an allow-list check and, when it passes, a dry run: ~100/s).
GUARD_CASES ?= 100000
CARGO_FUZZ := $(TOOLS)/cargo-fuzz/bin/cargo-fuzz
# Generated schemas (of VALUE_RECORDS random records each) loaded into both
# dialects and judged by fastavro.
VALUE_CASES ?= 2000
VALUE_RECORDS ?= 50
fuzz: fuzz-targets fuzz-props fuzz-guard fuzz-values
fuzz-targets:
	@[ -x $(CARGO_FUZZ) ] || cargo install cargo-fuzz@0.13.2 --locked --root $(TOOLS)/cargo-fuzz
	CARGO_FUZZ=$(CARGO_FUZZ) CARGO_TARGET_DIR=$(TOOLS)/fuzz-target fuzz/run.sh $(FUZZ_RUNS)
fuzz-props:
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release -p mend-avro -p mend-store -p mend-config -p mend-registry --lib fuzz_
fuzz-values: venv
	infra/up.sh
	MEND_PYTHON=$(CURDIR)/$(VENV)/bin/python MEND_VALUE_CASES=$(VALUE_CASES) MEND_VALUE_RECORDS=$(VALUE_RECORDS) \
	  cargo test --release -p mend-tests --test values -- --nocapture
fuzz-guard:
	infra/up.sh
	MEND_GUARD_CASES=$(GUARD_CASES) cargo test --release -p mend-tests --test guard fuzz_ -- --nocapture

## peers: the peer mend is measured against (Kafka Connect 4.4.0, Debezium's
## JDBC sink, Apicurio's converter on mend's registry), installed once per
## machine from Maven Central and checked by sinking 10,000 Avro records
peers: venv
	infra/peers.sh smoke

## bench-peers: mend's loader beside the peer and COPY on the same million
## records, and the drift story through both (docs/benchmarks.md)
bench-peers: venv
	infra/up.sh
	cargo bench -p mend-tests --bench peers

## bench: registry, codec, pipeline and scale figures (release build)
bench:
	infra/up.sh
	cargo bench -p mend-tests --bench foundation
	cargo bench -p mend-tests --bench pipeline
	cargo bench -p mend-tests --bench drift
	cargo build --release -p mend
	MEND_BIN=$${CARGO_TARGET_DIR:-target}/release/mend cargo bench -p mend-tests --bench scale

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean: infra-down
	rm -rf .mend
