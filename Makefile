# The two commands of the README: `make demo` and `make test`. Each installs uv if it is missing
# and syncs the locked environment, so a fresh machine needs nothing else.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/.tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV_BIN := $(ROOT)/.venv/bin

export PATH := $(VENV_BIN):$(PATH)
export AIRFLOW_HOME ?= $(ROOT)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__API__HOST := 127.0.0.1
export AIRFLOW__API__PORT := 8080
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_ENABLE_TELEMETRY := false
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test night airflow-db airflow-ui mlflow-ui bench browser clean

$(UV):
	@echo "uv not found: installing it into $(TOOLS)"
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv

setup: $(UV)
	$(UV) sync --frozen

airflow-db: setup
	@mkdir -p $(AIRFLOW_HOME)
	$(UV) run --frozen airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: airflow-db
	$(UV) run --frozen python -m pipelines.cli demo --fresh

test: setup
	CI=$${CI:-} $(UV) run --frozen pytest

# One night from the command line: make night DS=2026-10-01
night: airflow-db
	@test -n "$(DS)" || (echo "usage: make night DS=YYYY-MM-DD"; exit 2)
	$(UV) run --frozen airflow dags test batch_scoring -c '{"ds": "$(DS)"}'

airflow-ui: airflow-db
	$(UV) run --frozen airflow standalone

mlflow-ui: setup
	$(UV) run --frozen mlflow ui --backend-store-uri sqlite:///$(ROOT)/var/mlflow/mlflow.db --host 127.0.0.1 --port 5000

bench: setup
	$(UV) run --frozen python bench/bench_scoring.py
	$(UV) run --frozen python bench/bench_drift.py

# Debian's chromium for the browser test (needs root); without it that one test is skipped outside CI.
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

clean:
	rm -rf $(ROOT)/var
