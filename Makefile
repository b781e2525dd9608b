# The two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
STACK := deploy/local
PY ?= /opt/ingest-stack/venv/bin/python
CARGO_FLAGS ?= --release

.PHONY: demo test stack build unit e2e lint deploy-check k8s-manifests clean-stack bench soak chaos

## Installs what is missing, starts the local stack, runs the pipeline end to end and
## prints one aggregate answered by ClickHouse and by the Iceberg table.
demo:
	$(STACK)/demo.sh

## Starts what the tests need and runs every test.
test: stack build lint unit e2e deploy-check

stack:
	$(STACK)/install.sh
	$(STACK)/up.sh

build:
	cargo build $(CARGO_FLAGS) --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

unit:
	cargo test $(CARGO_FLAGS) --workspace

e2e:
	. $(STACK)/env.sh && $(PY) -m pytest -q --timeout=900 tests/e2e $(PYTEST_ARGS)

## Offline checks of the Dockerfile, the Helm chart, deploy/k8s and the config they ship
## (the tools are pinned in tests/deploy/requirements.txt, installed by `make stack`).
deploy-check:
	$(PY) -m pytest -q tests/deploy $(PYTEST_ARGS)

## Regenerates deploy/k8s/ from the chart's default render (deploy-check fails when they differ).
k8s-manifests:
	$(PY) tests/deploy/chart.py --write-k8s

## Fault injection at full size: 100,000 simulated schedules of the offset protocol and
## 100,000 of ClickHouse recovery, then
## kill -9 loops, rebalances, a frozen instance, sink outages.
chaos: stack build
	CHAOS=full cargo test $(CARGO_FLAGS) -p ingest --test protocol_sim
	CHAOS=full cargo test $(CARGO_FLAGS) -p ingest-sink-clickhouse --lib recovery_sim
	. $(STACK)/env.sh && CHAOS=full $(PY) -m pytest -q tests/e2e/test_chaos.py

clean-stack:
	$(STACK)/down.sh

## Measures us and the alternatives in one run (results in bench/results/, ~30 min;
## the flame graph needs perf (Debian: linux-perf) and inferno, installed here if missing).
bench: stack
	command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
	cargo build --release -p ingest -p ingest-bench
	mkdir -p bench/results
	cargo bench -p ingest-bench --bench hot_path 2>&1 | tee bench/results/criterion-latest.txt | grep -E "^[a-z_]+/|time:|thrpt:|^parquet size"
	./target/release/alloc_count | tee bench/results/alloc-latest.json
	. $(STACK)/env.sh && $(PY) bench/harness.py $(BENCH_ARGS)

## The service fed live at half of (d)'s rate for 30 minutes (SOAK_ARGS="--minutes 5"):
## RSS, CPU and lag over time, then every event checked once in each sink
## (bench/results/soak-latest.{md,png}; not run in CI).
soak: stack
	cargo build --release -p ingest
	. $(STACK)/env.sh && $(PY) bench/soak.py $(SOAK_ARGS)
