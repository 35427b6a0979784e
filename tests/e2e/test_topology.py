"""The docker-compose topology, run natively: PostgreSQL metadata DB, api-server, scheduler (LocalExecutor),
dag-processor and triggerer as separate processes, like the compose services.

Checks what only a real scheduler does: the nightly run it creates on its own scores last night's partition; a
run triggered through the REST API (as from the UI) with force_retrain emits the retraining Asset event, and the
scheduler starts retrain_model on it; a trigger whose `ds` is not a date is refused before any run exists.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import yaml

from pipelines import registry, retraining, sample_data
from pipelines.config import load_config
from tests.api_server import admin_headers, free_port, wait_until_healthy
from tests.conftest import REPO, airflow_env, write_config

pytestmark = pytest.mark.e2e

BACKFILL = [date(2019, 3, 4), date(2019, 3, 5)]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
COMPONENTS = {  # the compose services and the command each runs
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
}


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def test_compose_file_describes_this_topology():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name, command in COMPONENTS.items():
        assert services[name]["command"][:2] == ["airflow", *command]
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "${POSTGRES_PASSWORD" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]  # secrets from the environment
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")
        assert env["AIRFLOW_VAR_PIPELINE_AUDIT_KEY"].startswith("${")
        assert env["PIPELINE_CONFIG"] == "/opt/nightly-ml/include/config/pipeline.yaml"
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # set before any task loads OpenMP
        assert env["ARROW_DEFAULT_MEMORY_POOL"] == "system"  # and Arrow's allocator before pyarrow loads
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published), published
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    assert services["postgres"]["image"].startswith("postgres:")
    dockerfile = (REPO / services["airflow-scheduler"]["build"]["dockerfile"]).read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"{line}: {source} is missing"
    assert "uv sync --frozen --no-dev" in dockerfile


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    try:
        _admin("SELECT 1")
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is needed: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth): {exc}")
    folder = tmp_path_factory.mktemp("topology")
    db = f"nightly_ml_test_{os.getpid()}"
    for name in (db, f"{db}_history"):
        _admin(f"DROP DATABASE IF EXISTS {name}")
        _admin(f"CREATE DATABASE {name}")
    today = datetime.now(UTC).date()
    first = today - timedelta(days=20)
    config_path = write_config(folder, partition_wait={"timeout_minutes": 2, "poke_interval_seconds": 10})
    history_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}_history"
    # the same history database as the components: it also holds the audit log's head record
    config = load_config(config_path, environ={**os.environ, "PIPELINE_HISTORY_URL": history_url})
    sample_data.generate(config.data_root, first, 20, 1000, label_delay_days=3)  # up to yesterday
    # history years back, for Airflow's own backfill (start_date comes from the earliest partition)
    sample_data.generate(config.data_root, BACKFILL[0], len(BACKFILL), 1000, label_delay_days=0)
    registry.init_store(config)
    window = retraining.select_training_window(config, (today - timedelta(days=9)).isoformat())
    champion = retraining.train_candidate(config, window, {"airflow_run_id": "setup", "reason": "bootstrap"})
    retraining.bootstrap_or_challenge(config, champion, "setup")
    port = free_port()
    pg_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
    env = airflow_env(folder / "airflow", config_path) | {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "PIPELINE_HISTORY_URL": history_url,
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    procs, logs = {}, {}
    base = f"http://127.0.0.1:{port}"
    try:
        for name, command in COMPONENTS.items():
            logs[name] = folder / f"{name}.log"
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *command],
                env=env,
                cwd=REPO,
                stdout=logs[name].open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_healthy(base, {name: (procs[name], logs[name]) for name in procs})
        yield {
            "base": base,
            "headers": admin_headers(base, folder / "airflow"),
            "config": config,
            "today": today,
            "logs": logs,
            "procs": procs,
            "champion": champion,
        }
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for name in (db, f"{db}_history"):
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _runs(t, dag_id):
    response = httpx.get(f"{t['base']}/api/v2/dags/{dag_id}/dagRuns", headers=t["headers"], timeout=10)
    return response.json().get("dag_runs", []) if response.status_code == 200 else []


def _wait(t, dag_id, predicate, seconds=600):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc_name, proc in t["procs"].items():
            assert proc.poll() is None, f"{proc_name} exited: {t['logs'][proc_name].read_text()[-3000:]}"
        done = [r for r in _runs(t, dag_id) if predicate(r) and r["state"] in ("success", "failed")]
        if done:
            return done[0]
        time.sleep(3)
    raise AssertionError(
        f"no finished {dag_id} run: {_runs(t, dag_id)}\n{t['logs']['airflow-scheduler'].read_text()[-4000:]}"
    )


def test_the_scheduler_runs_the_nightly_dag_on_its_own(topology):
    run = _wait(topology, "batch_scoring", lambda r: r["run_type"] == "scheduled")
    assert run["state"] == "success", run
    ds = run["data_interval_start"][:10]
    assert ds in {(topology["today"] - timedelta(days=n)).isoformat() for n in (1, 2)}
    import pandas as pd

    predictions = pd.read_parquet(topology["config"].data_root / "predictions" / f"ds={ds}")
    assert set(predictions["airflow_run_id"]) == {run["dag_run_id"]}
    assert set(predictions["model_version"]) == {topology["champion"].version}


def test_a_trigger_with_a_path_for_a_date_is_refused(topology):
    response = httpx.post(
        f"{topology['base']}/api/v2/dags/batch_scoring/dagRuns",
        headers=topology["headers"],
        json={"logical_date": None, "conf": {"ds": "../../etc/passwd"}},
    )
    assert response.status_code == 400, response.text
    assert "ds" in response.text


def test_a_retraining_request_starts_retrain_model_through_the_scheduler(topology):
    ds = (topology["today"] - timedelta(days=3)).isoformat()
    response = httpx.post(
        f"{topology['base']}/api/v2/dags/batch_scoring/dagRuns",
        headers=topology["headers"],
        json={"logical_date": None, "conf": {"ds": ds, "force_retrain": True}},
    )
    assert response.status_code == 200, response.text
    triggered = response.json()["dag_run_id"]
    night = _wait(topology, "batch_scoring", lambda r: r["dag_run_id"] == triggered)
    assert night["state"] == "success", night
    retrain = _wait(topology, "retrain_model", lambda r: r["run_type"] == "asset_triggered")
    assert retrain["state"] == "success", retrain
    from mlflow import MlflowClient

    config = topology["config"]
    client = MlflowClient(config.tracking_uri)
    versions = client.search_model_versions(f"name='{config.model.registered_name}'")
    newest = max(versions, key=lambda v: int(v.version))
    assert newest.tags["airflow_run_id"] == retrain["dag_run_id"]
    assert newest.tags["reason"] == f"{ds}: force_retrain was set on the run"


def test_airflow_backfill_scores_past_partitions_in_order_once_each(topology):
    """Airflow's own backfill (as from the UI's Backfill dialog) of two dates years before today, in order."""
    response = httpx.post(
        f"{topology['base']}/api/v2/backfills",
        headers=topology["headers"],
        json={
            "dag_id": "batch_scoring",
            "from_date": f"{BACKFILL[0]}T00:00:00Z",
            "to_date": f"{BACKFILL[-1]}T23:00:00Z",
            "max_active_runs": 1,
            "reprocess_behavior": "none",
        },
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = [r for r in _runs(topology, "batch_scoring") if r["run_type"] == "backfill"]
        if len(runs) == len(BACKFILL) and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert sorted(r["data_interval_start"][:10] for r in runs) == [d.isoformat() for d in BACKFILL], runs
    assert all(r["state"] == "success" for r in runs), runs
    by_start = sorted(runs, key=lambda r: r["start_date"])
    assert [r["data_interval_start"][:10] for r in by_start] == [d.isoformat() for d in BACKFILL]  # in order
    import pandas as pd

    from pipelines import history

    recorded = history.read_history(topology["config"])
    for run in runs:
        ds = run["data_interval_start"][:10]
        predictions = pd.read_parquet(topology["config"].data_root / "predictions" / f"ds={ds}")
        assert set(predictions["airflow_run_id"]) == {run["dag_run_id"]}  # scored once, by its backfill run
        assert predictions["id"].is_unique
        assert (recorded["ds"] == ds).sum() == 1
