#!/usr/bin/env bash
# `make airflow-ui`: what `airflow standalone` runs (api-server, scheduler, dag-processor, triggerer), with every
# listener on 127.0.0.1. standalone also starts the scheduler's and the triggerer's log servers, which bind to all
# interfaces (Airflow hard-codes the host); here the api-server reads task logs from the local log folder instead.
# Ctrl-C stops all four.
set -euo pipefail
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:${AIRFLOW__API__PORT}/execution/}"
pids=()
stop() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -gt 0 ] && kill -INT "${pids[@]}" 2>/dev/null || true
  wait || true
}
trap stop INT TERM EXIT
airflow api-server --port "$AIRFLOW__API__PORT" & pids+=($!)
airflow scheduler --skip-serve-logs & pids+=($!)
airflow dag-processor & pids+=($!)
airflow triggerer --skip-serve-logs & pids+=($!)
echo "Airflow on http://${AIRFLOW__API__HOST}:${AIRFLOW__API__PORT} (user admin, password in ${AIRFLOW_HOME:-~/airflow}/simple_auth_manager_passwords.json.generated); Ctrl-C stops it"
wait -n "${pids[@]}"
