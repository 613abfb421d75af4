# InfraWatch developer commands. `make run` and `make test` create the venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
PROTOC = $(PY) -m grpc_tools.protoc -I protos --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) $(PROTO_FILES)

.PHONY: install run test unit protos check-protos lint bench bench-fleet bench-alerts bench-console bench-remote-write bench-promql bench-storage up down logs clean agent-dist

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m services.console.vendor
	touch $(STAMP)

install: $(STAMP)

## Start the whole platform locally on the embedded SQLite default (Ctrl-C stops it).
run: install
	$(PY) -m services.launcher

## Everything CI checks: generated code in sync, lint, then every test tier.
test: install check-protos lint
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

protos: install
	$(call PROTOC,protos)

check-protos: install
	@tmp=$$(mktemp -d) && cp -r protos/. $$tmp/ && \
	find $$tmp -name '*_pb2*.py*' -delete && \
	$(call PROTOC,$$tmp) && \
	if diff -r -x '__pycache__' -x '__init__.py' protos $$tmp; then echo "protos: generated code is in sync"; rm -rf $$tmp; \
	else echo "protos: generated code differs from the .proto files; run 'make protos' and commit" >&2; rm -rf $$tmp; exit 1; fi

## The metrics ingest/query benchmark on the local PostgreSQL; prints JSON and writes bench.json.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

## The fleet benchmark: N agents x S series at 1 s (N=200 S=100 by default; BACKEND=sqlite, IDLE=2000 ...).
N ?= 200
S ?= 100
BACKEND ?= postgres
IDLE ?= 0
DURATION ?= 30
bench-fleet: install
	$(PY) -m bench.fleet --agents $(N) --series $(S) --backend $(BACKEND) --idle-streams $(IDLE) --duration $(DURATION)

## The alerts benchmark: one evaluation cycle of RULES rules over SERIES series each, and the delay
## from a threshold-crossing sample to its webhook (RULES=1000 SERIES=1000 QUERIES=10 BACKEND=postgres).
RULES ?= 1000
SERIES ?= 1000
QUERIES ?= 10
bench-alerts: install
	$(PY) -m bench.alerts --rules $(RULES) --series $(SERIES) --queries $(QUERIES) --backend $(BACKEND)

## Prometheus remote-write into the metrics service: SERIES_RW series per round, requests of BATCH
## samples on SHARDS connections, PER_SERIES samples of each series per request
## (SERIES_RW=100000 ROUNDS=10 BATCH=2000 SHARDS=16 PER_SERIES=1 BACKEND=postgres; PER_SERIES=10 is
## the batched shape).
SERIES_RW ?= 100000
ROUNDS ?= 10
BATCH ?= 2000
SHARDS ?= 16
PER_SERIES ?= 1
bench-remote-write: install
	$(PY) -m bench.remote_write --series $(SERIES_RW) --rounds $(ROUNDS) --batch $(BATCH) --shards $(SHARDS) \
		--samples-per-series $(PER_SERIES) --backend $(BACKEND)

## Bytes per sample on disk after DAYS simulated days of agent-like data (SERIES_ST series at 15 s,
## batches straddling windows), on PostgreSQL and SQLite, with the service's own maintenance only.
SERIES_ST ?= 1000
DAYS ?= 2
bench-storage: install
	$(PY) -m bench.storage --series $(SERIES_ST) --days $(DAYS)

## PromQL over the Prometheus HTTP API on the `make bench` workload, against Debian's Prometheus holding
## the same data: the issue's four target queries and a mix of 40, one kept-alive connection each, p50.
PROMQL_RUNS ?= 30
bench-promql: install
	$(PY) -m bench.promql --runs $(PROMQL_RUNS) --backend $(BACKEND)

## The console benchmark in Debian's Chromium: fleet page render, a host's 24 h chart data, live point delay.
CONSOLE_AGENTS ?= 1000
bench-console: install
	$(PY) -m bench.console --agents $(CONSOLE_AGENTS) --backend $(BACKEND)

## The host agent as its own wheel (grpcio, protobuf and psutil only) in dist/.
agent-dist: install
	$(PY) deploy/agent/build.py dist

## docker compose: PostgreSQL + agents + metrics + alerts + gateway + an agent for this host; waits for health.
## Secrets come from the shell or .env; a missing .env is written with random ones (mode 0600).
up:
	@test -f .env || { umask 077; for name in OPERATOR_TOKEN SERVICE_TOKEN ENROLLMENT_TOKEN DB_PASSWORD; do \
	  echo "INFRAWATCH_$$name=$$(python3 -c 'import secrets; print(secrets.token_hex(24))')"; done > .env; \
	  echo "wrote .env with generated secrets (operator token: INFRAWATCH_OPERATOR_TOKEN)"; }
	docker compose up --build --detach --wait
	@echo "gateway: localhost:50050 (grpcurl -plaintext localhost:50050 list)"

down:
	docker compose down

logs:
	docker compose logs --follow --tail=100

lint: install
	$(VENV)/bin/ruff check services agent tests bench
	$(VENV)/bin/ruff format --check services agent tests bench
	$(VENV)/bin/mypy services agent bench

clean:
	rm -rf $(VENV) data bench.json bench-fleet.json bench-alerts.json bench-console.json bench-storage.json dist test-artifacts
