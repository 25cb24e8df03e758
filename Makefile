# Entry points. `make demo` and `make test` work on a fresh machine: both
# install what is missing first (scripts/setup).

CARGO ?= cargo

.PHONY: setup build demo demo-stop demo-cluster demo-cluster-stop images test lint audit fmt crds bench bench-shards bench-autoscaler soak fuzz testenv-up testenv-down

setup:
	@scripts/setup

build: setup
	$(CARGO) build --workspace --bins

## A local pipeline: redis-server + telemetry-ingest, 100 000 events, results.
demo: build
	@scripts/demo

demo-stop:
	@scripts/demo stop

## The whole picture on a local control plane: the Helm chart installed, the
## operator in pods under its own RBAC, a pipeline applied, events sent.
demo-cluster:
	@scripts/demo-cluster

demo-cluster-stop:
	@scripts/demo-cluster stop

## Container images of telemetry-ingest and telemetry-operator, built without
## a Docker daemon, as archives in target/images/ (docs/images.md).
images:
	@scripts/images

## The whole test suite, end-to-end tests on a local control plane included.
test: setup
	@scripts/test

## Formatting, clippy, and the dependency graph's licenses, duplicate versions
## and sources against deny.toml (docs/supply-chain.md). CI runs it.
lint:
	@scripts/cargo-tools cargo-deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny --locked check licenses bans sources

## Known vulnerabilities (RustSec). Needs github.com, to fetch the advisory
## database, so it is not part of `lint` or CI (docs/supply-chain.md).
audit:
	@scripts/cargo-tools cargo-deny
	$(CARGO) deny --locked check advisories

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML from the Rust types, in crds/ and in the chart
## (both checked for drift by the tests).
crds:
	$(CARGO) run -q -p telemetry-operator --bin crdgen > crds/telemetrypipelines.yaml
	mkdir -p charts/telemetry-pipeline/crds
	cp crds/telemetrypipelines.yaml charts/telemetry-pipeline/crds/telemetrypipelines.yaml

## Throughput and latency of the ingest path, then the cost of a sharded
## pipeline (3-shard Redis Cluster against one Redis); figures to stdout.
bench: setup
	@scripts/bench
	@scripts/bench-shards

## A sharded pipeline only: Redis CPU per event per shard, spread, query latency.
bench-shards: setup
	@scripts/bench-shards

## Ten minutes of steady load at half the maximum, every aggregation on:
## memory, file descriptors, Redis memory and p99 sampled every 10 s, with a
## plot in target/soak/ (docs/reliability.md). A 60 s version is in `make test`.
soak: setup
	@scripts/soak

## The autoscaler: one decision over 1 000 pods, scraping 100 real pods, and
## the Redis-saturation signal against Redis's own CPU (BENCHMARKS.md).
bench-autoscaler: setup
	$(CARGO) build --release -p telemetry-ingest -p telemetryctl
	$(CARGO) bench -p telemetry-operator --bench decide
	$(CARGO) bench -p telemetry-operator --bench scrape
	scripts/redis-busy

## Long fuzz runs (libFuzzer, nightly; cargo-fuzz installed if missing):
## every target 1 000 000 inputs from its seed corpus, figures at the end
## (docs/reliability.md). `make test` runs each target briefly on stable.
fuzz:
	@scripts/fuzz

testenv-up:
	@scripts/testenv up

testenv-down:
	@scripts/testenv down
