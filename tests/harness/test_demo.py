"""`make demo` writes and deletes only its own folders and the runs it started itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import demo
from pipelines.core.config import load_config, model_sources
from tests.conftest import REPO, airflow_env, airflow_home


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_DATA_ROOT", "{tmp}/users-data"),
        ("PIPELINE_DATA_ROOT", "s3://users-bucket/lake"),
        ("PIPELINE_HISTORY_URL", "sqlite:///{tmp}/users-data/history.db"),
        ("PIPELINE_MLFLOW_TRACKING_URI", "sqlite:///{tmp}/users-data/mlflow.db"),
        ("PIPELINE_REPORT_STORE", "s3://users-bucket/reports"),
    ],
)
def test_demo_refuses_an_override_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    users = tmp_path / "users-data"
    users.mkdir()
    (users / "canary.txt").write_text("mine")
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    monkeypatch.setattr(demo, "DEMO_LOGS", tmp_path / "demo-logs")
    monkeypatch.setattr(demo, "start_over", lambda: pytest.fail("the demo started deleting"))
    assert demo.main(["--fresh"]) == 2
    err = capsys.readouterr().err
    assert f"${variable}" in err and "only its own folders" in err
    assert (users / "canary.txt").read_text() == "mine"
    assert not (tmp_path / "demo-logs").exists()


def test_demo_refuses_a_config_whose_folders_are_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(demo.DEFAULT_CONFIG.read_text().replace("../../var/data", str(tmp_path / "elsewhere")))
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.setattr(demo, "start_over", lambda: pytest.fail("the demo started deleting"))
    assert demo.main([]) == 2
    assert f"data_root in {config} points at {tmp_path / 'elsewhere'}" in capsys.readouterr().err
    assert demo.main(["--fresh"]) == 2
    assert "unset $PIPELINE_CONFIG" in capsys.readouterr().err


def test_the_bundled_config_is_the_demos_own() -> None:
    config = load_config(demo.DEFAULT_CONFIG, environ={})
    assert demo.foreign_locations(config, demo.DEFAULT_CONFIG, {}) == []
    sources = model_sources({"PIPELINE_CONFIG": str(demo.DEMO_DEPLOYMENT)})
    assert {s.config.model.kind for s in sources} == {"binary", "multiclass", "regression"}
    assert all(demo.foreign_locations(s.config, s.file, {}) == [] for s in sources)


FORGET = """
import json, sys
from datetime import datetime, UTC
from airflow.models import DagRun
from airflow.utils.session import create_session
from airflow.utils.types import DagRunType
from harness.runner import forget_runs

night = datetime(2026, 10, 1, 2, tzinfo=UTC)
other = datetime(2026, 10, 2, 2, tzinfo=UTC)
with create_session() as s:
    s.add(DagRun(dag_id="batch_scoring", run_id="demo_night", logical_date=night, run_type=DagRunType.MANUAL, conf={}))
    s.add(DagRun(dag_id="batch_scoring", run_id="rest_run", logical_date=other, run_type=DagRunType.MANUAL, conf={}))
    s.add(DagRun(dag_id="retrain_model", run_id="users_retrain", logical_date=night, run_type=DagRunType.MANUAL, conf={}))
removed = forget_runs([("batch_scoring", night), ("rollback_model", other)])
with create_session() as s:
    left = sorted(r.run_id for r in s.query(DagRun).all())
print(json.dumps({"removed": removed, "left": left}))
"""


def test_forget_runs_removes_only_the_runs_named(airflow_db: Path, tmp_path: Path) -> None:
    env = airflow_env(airflow_home(airflow_db, tmp_path / "airflow"), demo.DEFAULT_CONFIG)
    out = subprocess.run([sys.executable, "-c", FORGET], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = out.stdout.strip().splitlines()[-1]
    assert result == '{"removed": 1, "left": ["rest_run", "users_retrain"]}'


UNPAUSE = """
import json
from airflow.models.dag import DagModel
from airflow.models.dagbundle import DagBundleModel
from airflow.utils.session import create_session
from harness.runner import unpause

with create_session() as s:
    s.merge(DagBundleModel(name="dags-folder"))
    s.flush()
    for dag_id in ("retrain_model__a", "rollback_model__a", "batch_scoring__a"):
        s.add(DagModel(dag_id=dag_id, is_paused=True, bundle_name="dags-folder"))
first = unpause(["retrain_model__a", "rollback_model__a", "not_a_dag"])
again = unpause(["retrain_model__a"])
with create_session() as s:
    paused = sorted(d.dag_id for d in s.query(DagModel).filter(DagModel.is_paused).all())
print(json.dumps({"first": first, "again": again, "paused": paused}))
"""


def test_the_demo_unpauses_the_dags_that_run_on_request_only(airflow_db: Path, tmp_path: Path) -> None:
    env = airflow_env(airflow_home(airflow_db, tmp_path / "airflow"), demo.DEFAULT_CONFIG)
    out = subprocess.run(
        [sys.executable, "-c", UNPAUSE], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"first": ["retrain_model__a", "rollback_model__a"], "again": [], "paused": ["batch_scoring__a"]}
