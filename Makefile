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
# Tasks pass the pipeline's typed values (pipelines.core.contracts) to each other; Airflow deserialises only allowed classes.
export AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES := airflow.* pipelines.*
export AIRFLOW__API__HOST := 127.0.0.1
export AIRFLOW__API__PORT := 8080
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_ENABLE_TELEMETRY := false
export PYTHONUNBUFFERED := 1
# OpenMP threads sleep instead of spinning when a task waits: a worker runs several tasks (pipelines/threads.py)
export OMP_WAIT_POLICY ?= PASSIVE
# Arrow gives freed memory back at once instead of keeping it for a while (pipelines/threads.py)
export ARROW_DEFAULT_MEMORY_POOL ?= system
# The audit log's HMAC key (the Airflow Variable pipeline_audit_key): yours from the environment, else one generated
# once for this checkout under var/ (never committed), like Airflow's generated admin password.
AUDIT_KEY_FILE := $(ROOT)/var/secrets/audit_key
export AIRFLOW_VAR_PIPELINE_AUDIT_KEY ?= $(shell mkdir -p $(ROOT)/var/secrets && chmod 700 $(ROOT)/var/secrets && { test -s $(AUDIT_KEY_FILE) || python3 -c 'import secrets; print(secrets.token_hex(32))' > $(AUDIT_KEY_FILE); } && chmod 600 $(AUDIT_KEY_FILE) && cat $(AUDIT_KEY_FILE))

.PHONY: setup demo test test-fast test-tools check mutate night airflow-db airflow-ui mlflow-ui bench browser clean

$(UV):
	@echo "uv not found: installing it into $(TOOLS)"
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv

setup: $(UV)
	@# bytecode compiled once at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
	@# would otherwise recompile every module it imports (import great_expectations: 16 s -> 9 s here)
	$(UV) sync --frozen --compile-bytecode

airflow-db: setup
	@mkdir -p $(AIRFLOW_HOME)
	$(UV) run --frozen airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

# The demo's deployment: three models side by side (include/config/models); set PIPELINE_CONFIG to run your own.
DEMO_DEPLOYMENT := $(ROOT)/include/config/models
demo night airflow-ui: export PIPELINE_CONFIG ?= $(DEMO_DEPLOYMENT)

demo: airflow-db
	$(UV) run --frozen python -m harness.demo --fresh

# Lint, format, types and the import layers (pyproject.toml), then the test suite.
CODE := pipelines dags plugins harness tests bench
check: setup
	$(UV) run --frozen ruff check $(CODE)
	$(UV) run --frozen ruff format --check $(CODE)
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports

# The compose file is checked by Debian's docker-compose (1.29: `config` needs no engine); installed when missing.
test-tools:
	@command -v docker-compose > /dev/null || { echo "installing Debian's docker-compose (checks docker-compose.yaml)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose > /dev/null; } \
	  || echo "could not install docker-compose: the compose test will say so"

# Two pytest-xdist workers, a test file each at a time (a file's shared world is built once): a world is mostly one
# busy process, so two of them fill the machine's two cores. TEST_WORKERS=1 runs the files one after another.
TEST_WORKERS ?= 2
test: check test-tools
	CI=$${CI:-} $(UV) run --frozen pytest -n $(TEST_WORKERS) --dist loadfile

# While you work: the static checks and every test but the end-to-end worlds (marker e2e: real Airflow runs of many
# nights, the approval with an api-server, the distributed topology) and the few slow ones (marker slow: kill -9
# fault tests, drift calibration, the moto S3 worlds, 22 generated nights). Under 3 minutes here; `make test` runs all.
test-fast: check
	CI=$${CI:-} $(UV) run --frozen pytest -m "not e2e and not slow" --durations=10

# Mutation testing of the pure modules against the fast unit tests (by hand, not in CI; [tool.mutmut]).
mutate: setup
	rm -rf $(ROOT)/mutants
	# one OpenMP thread: mutmut forks its test runs, and a forked OpenMP thread pool hangs (read as a timeout)
	OMP_NUM_THREADS=1 $(UV) run --frozen mutmut run --max-children 2
	$(UV) run --frozen python bench/mutation_summary.py

# One night of one model from the command line: make night DS=2026-10-01 [MODEL=credit_default]
MODEL ?= credit_default
night: airflow-db
	@test -n "$(DS)" || (echo "usage: make night DS=YYYY-MM-DD"; exit 2)
	$(UV) run --frozen airflow dags test batch_scoring__$(MODEL) -c '{"ds": "$(DS)"}'

airflow-ui: airflow-db
	$(UV) run --frozen bash $(ROOT)/include/airflow_local.sh

mlflow-ui: setup
	$(UV) run --frozen mlflow ui --backend-store-uri sqlite:///$(ROOT)/var/mlflow/mlflow.db --host 127.0.0.1 --port 5000

bench: setup
	$(UV) run --frozen python bench/bench_scoring.py
	$(UV) run --frozen python bench/bench_night.py
	$(UV) run --frozen python bench/bench_drift.py

# Debian's chromium for the browser test (needs root); without it that one test is skipped outside CI.
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

clean:
	rm -rf $(ROOT)/var/airflow $(ROOT)/var/data $(ROOT)/var/models $(ROOT)/var/mlflow $(ROOT)/var/demo $(ROOT)/mutants
