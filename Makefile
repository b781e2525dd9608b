# The two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
STACK := deploy/local
PY ?= /opt/ingest-stack/venv/bin/python
CARGO_FLAGS ?= --release

.PHONY: demo test stack build unit e2e lint deploy-check clean-stack

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
	. $(STACK)/env.sh && $(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

deploy-check:
	deploy/check.sh

clean-stack:
	$(STACK)/down.sh
