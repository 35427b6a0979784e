"""The docker-compose topology, run natively: PostgreSQL (Airflow's metadata, Celery's results, the history and
audit log, MLflow's backend store), Redis as the Celery broker, an S3-compatible object store (moto in server
mode) behind an MLflow tracking server, and the api-server, scheduler (CeleryExecutor), dag-processor, triggerer
and two Celery workers as separate processes, each worker with its own empty working directory, HOME and
AIRFLOW_HOME. The data root is in the bucket too (partitions, predictions, shards), and so are the reports and
quarantine records, which the api-server serves from there: no two processes share a folder.

Checks what only a real scheduler does: the nightly run it creates on its own scores last night's partition; a
run triggered through the REST API (as from the UI) with force_retrain emits the retraining Asset event, and the
scheduler starts retrain_model on it; a trigger whose `ds` is not a date is refused before any run exists.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import yaml

from harness import sample_data
from harness.topology import (
    COMPONENTS,
    PG,
    REPORT_PREFIX,
    ServicesMissing,
    check_services,
    distributed,
    runs,
    wait_for_run,
)
from pipelines.flows import retraining
from pipelines.governance import registry
from tests.conftest import AUDIT_KEY, REPO, write_config

pytestmark = pytest.mark.e2e

BACKFILL = [date(2019, 3, 4), date(2019, 3, 5)]
WORKERS = ("airflow-worker-1", "airflow-worker-2")  # the compose service airflow-worker, scaled to two


def _compose_config() -> dict:
    """The compose file as Debian's `docker-compose` (1.29, no engine needed) resolves it with .env.example."""
    binary = shutil.which("docker-compose")
    if binary is None:
        message = (
            "docker-compose is not installed (make test installs Debian's package: apt-get install docker-compose)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(
        [binary, "--env-file", ".env.example", "-f", "docker-compose.yaml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_describes_this_topology():
    services = _compose_config()["services"]
    for name, command in COMPONENTS.items():
        assert services[name]["command"][: 1 + len(command)] == ["airflow", *command]
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:CHANGE-ME@postgres")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:CHANGE-ME@redis:6379/")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "CHANGE-ME"  # every secret comes from .env
        assert env["AIRFLOW_VAR_PIPELINE_AUDIT_KEY"] == "CHANGE-ME"
        assert env["PIPELINE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["PIPELINE_HISTORY_URL"].startswith("postgresql+psycopg2://")
        assert env["PIPELINE_CONFIG"] == "/opt/nightly-ml/include/config/pipeline.yaml"
        assert env["PIPELINE_REPORT_STORE"] == "s3://nightly-ml/pipeline"  # reports served from the bucket
        assert env["PIPELINE_DATA_ROOT"] == "s3://nightly-ml/pipeline"  # the partitions live there too
        assert "volumes" not in services[name]  # no folder shared between services
        assert env["AWS_ENDPOINT_URL"] == "http://object-store:9000" and env["AWS_SECRET_ACCESS_KEY"] == "CHANGE-ME"
        assert services[name]["depends_on"]["object-store-init"]["condition"] == "service_completed_successfully"
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # set before any task loads OpenMP
        assert env["ARROW_DEFAULT_MEMORY_POOL"] == "system"  # and Arrow's allocator before pyarrow loads
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale airflow-worker=N needs both absent
    mlflow = services["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"] and "--serve-artifacts" in mlflow
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert mlflow[mlflow.index("--artifacts-destination") + 1].startswith("s3://nightly-ml/")
    assert "minio" in services["object-store"]["image"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published), published
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    assert services["postgres"]["image"].startswith("postgres:")
    dockerfile = (REPO / "include/docker/Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"{line}: {source} is missing"
    assert "uv sync --frozen --no-dev" in dockerfile
    # Prometheus scrapes the plugin with the token the Airflow connection holds; Grafana is provisioned from the repo
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "$METRICS_TOKEN" in prometheus["command"][0] and prometheus["environment"]["METRICS_TOKEN"] == "CHANGE-ME"
    for name in COMPONENTS:
        token = json.loads(services[name]["environment"]["AIRFLOW_CONN_MONITORING_METRICS"])
        assert token == {"conn_type": "generic", "password": "CHANGE-ME"}
    mounts = [str(v) for v in grafana["volumes"]]
    assert (
        any("include/grafana/dashboards" in m for m in mounts)
        and grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    )
    for mounted in ("include/prometheus", "include/grafana/provisioning", "include/grafana/dashboards"):
        assert (REPO / mounted).is_dir()


def test_env_example_names_every_variable_and_holds_no_secret():
    text = (REPO / "docker-compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if line and line[0] != "#"
    )
    assert used == set(example), f"used but not in .env.example: {used - set(example)}; unused: {set(example) - used}"
    secrets_ = {k: v for k, v in example.items() if "PASSWORD" in k or "SECRET" in k or k.endswith("_KEY")}
    assert secrets_ and set(secrets_.values()) == {"CHANGE-ME"}, secrets_
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    (tmp_path / "empty.env").write_text("")
    out = subprocess.run(
        [binary, "--env-file", str(tmp_path / "empty.env"), "-f", str(REPO / "docker-compose.yaml"), "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.endswith(("PASSWORD", "SECRET", "_KEY"))},
    )
    assert out.returncode != 0 and "set POSTGRES_PASSWORD in .env" in out.stderr, out.stderr


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    try:
        check_services()
    except ServicesMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("topology")
    today = datetime.now(UTC).date()
    # every 1,000-row night is scored as two mapped shards (the sharded path, on both workers)
    config_path = write_config(
        folder,
        partition_wait={"timeout_minutes": 2, "poke_interval_seconds": 10},
        scoring={"shard_rows": 600, "max_shards": 2},
    )
    made = {}

    def prepare(config):
        sample_data.generate(config.data_root, today - timedelta(days=20), 20, 1000, label_delay_days=3)
        # history years back, for Airflow's own backfill
        sample_data.generate(config.data_root, BACKFILL[0], len(BACKFILL), 1000, label_delay_days=0)
        registry.init_store(config)
        window = retraining.select_training_window(config, (today - timedelta(days=9)).isoformat())
        made["champion"] = retraining.train_candidate(
            config, window, {"airflow_run_id": "setup", "reason": "bootstrap"}
        )
        retraining.bootstrap_or_challenge(config, made["champion"], "setup")

    # one task at a time per worker: two shards queued together land on both workers
    with distributed(folder, config_path, AUDIT_KEY, prepare, workers=2, worker_concurrency=1) as running:
        yield {
            "running": running,
            "base": running.base,
            "headers": running.headers,
            "config": running.config,
            "airflow_db": running.airflow_db,
            "today": today,
            "champion": made["champion"],
        }


def _runs(t, dag_id):
    return runs(t["running"], dag_id)


def _wait(t, dag_id, predicate, seconds=600):
    return wait_for_run(t["running"], dag_id, predicate, seconds)


def test_the_scheduler_runs_the_nightly_dag_on_its_own(topology):
    run = _wait(topology, "batch_scoring", lambda r: r["run_type"] == "scheduled")
    assert run["state"] == "success", run
    ds = run["data_interval_start"][:10]
    assert ds in {(topology["today"] - timedelta(days=n)).isoformat() for n in (1, 2)}
    assert run["dag_run_id"].endswith(f"__ds-{ds}"), run["dag_run_id"]  # the scheduler named the run by its night
    import pandas as pd

    config = topology["config"]
    from pipelines.core.paths import LakePath
    from pipelines.flows import scoring
    from pipelines.storage.partitions import data_files, partition_dir

    assert isinstance(config.data_root, LakePath)  # the night was read from and written to the bucket
    predictions = pd.read_parquet(config.data_root / "predictions" / f"ds={ds}")
    assert set(predictions["airflow_run_id"]) == {run["dag_run_id"]}
    assert set(predictions["model_version"]) == {topology["champion"].version}
    # the same night scored embedded, by one task in this process, from the same data (copied to a local data
    # root) and model
    embedded = config.model_copy(update={"data_root": topology["running"].folder / "embedded"})
    local = partition_dir(embedded.data_root, "incoming", ds)
    local.mkdir(parents=True)
    for file in data_files(partition_dir(config.data_root, "incoming", ds)):
        (local / file.name).write_bytes(file.read_bytes())
    summary = scoring.score_partition(embedded, ds, topology["champion"].ref, "embedded")
    assert summary.shards == 0
    one_task = pd.read_parquet(summary.path).sort_values("id").reset_index(drop=True)
    sharded = predictions.sort_values("id").reset_index(drop=True)
    columns = ["id", "score", "prediction", "model_version", "scoring_engine"]
    pd.testing.assert_frame_equal(sharded[columns], one_task[columns])
    # the monitoring page serves the night's report from the object store: the workers' own copies are gone
    built = [p for p in topology["running"].folder.rglob(f"ds={ds}") if p.parent.name == "reports"]
    assert built, "the worker that monitored the night built its reports in its own work folder"
    for folder in built:
        shutil.rmtree(folder)
    client, bucket = topology["running"].s3_client(), topology["running"].bucket
    manifest = client.get_object(Bucket=bucket, Key=f"{REPORT_PREFIX}/reports/ds={ds}/manifest.json")["Body"].read()
    published = json.loads(manifest)["files"]
    assert {"drift.html", "summary.json", "validation.html"} <= set(published)
    page = httpx.get(f"{topology['base']}/monitoring/", headers=topology["headers"], timeout=30)
    assert page.status_code == 200 and f"/monitoring/reports/ds={ds}/drift.html" in page.text
    report = httpx.get(f"{topology['base']}/monitoring/reports/ds={ds}/drift.html", headers=topology["headers"])
    assert report.status_code == 200 and "root_metric_" in report.text, report.text[:300]  # Evidently's page
    assert hashlib.sha256(report.content).hexdigest() == published["drift.html"]["sha256"]
    assert report.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert httpx.get(f"{topology['base']}/monitoring/reports/ds={ds}/drift.html").status_code == 401  # no login


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

    from pipelines.storage import history

    recorded = history.read_history(topology["config"])
    for run in runs:
        ds = run["data_interval_start"][:10]
        predictions = pd.read_parquet(topology["config"].data_root / "predictions" / f"ds={ds}")
        assert set(predictions["airflow_run_id"]) == {run["dag_run_id"]}  # scored once, by its backfill run
        assert predictions["id"].is_unique
        assert (recorded["ds"] == ds).sum() == 1


def test_tasks_run_on_both_workers_and_models_live_behind_the_tracking_server(topology):
    """Runs last: by now the scheduled night, a triggered night, retrain_model and a backfill have run."""
    import psycopg2

    conn = psycopg2.connect(dbname=topology["airflow_db"], **PG)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT worker, args FROM celery_taskmeta WHERE worker IS NOT NULL")
        ran = [(worker.split("@")[0], bytes(args or b"")) for worker, args in cur.fetchall()]
    conn.close()
    assert {worker for worker, _ in ran} == set(topology["running"].workers) == set(WORKERS), (
        ran
    )  # Celery spread the tasks over both workers
    shard_workers = {worker for worker, args in ran if b"score_shard" in args}
    assert shard_workers == set(WORKERS), ran  # and the shards of the sharded nights too
    client = topology["running"].s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=topology["running"].bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert any(key.endswith("model.pkl") or key.endswith("MLmodel") for key in keys), keys[:20]
    # the retraining's gate comparison was published to the report store beside the nights' reports
    assert any(re.match(rf"{REPORT_PREFIX}/reports/models/v\d+_vs_v\d+/manifest.json$", key) for key in keys), keys
    champion = topology["champion"].ref
    from mlflow import MlflowClient

    uri = MlflowClient(topology["config"].tracking_uri).get_run(champion.run_id).info.artifact_uri
    assert uri.startswith("mlflow-artifacts:"), uri  # served by the tracking server, not a path on a worker
