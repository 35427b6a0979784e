"""One deployment, several models of every kind, through real Airflow (drive_models.py runs the DAG runs).

`tickets` is multiclass with the built-in trainer, `demand` a regression whose trainer is a user's scikit-learn
Pipeline with a linear model, `vendor` a binary model registered outside the product, only scored and monitored.
Each is bootstrapped (or adopted), scores nights, gets late labels (estimate beside realised), meets the gate on its
own primary metric (rmse, lower is better, for demand) and is rolled back; one history database holds them all.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from pipelines.core.config import CONFIG_ENV_VAR, model_sources
from pipelines.core.contracts import AuditAction
from pipelines.governance.audit import read_audit
from pipelines.governance.registry import Registry
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir
from pipelines.surfaces.monitoring_page import render_overview
from tests.conftest import REPO, airflow_env, airflow_home, write_config

pytestmark = pytest.mark.e2e


def _model(configs: Path, folder: Path, stem: str, kind: str | None, **model: object) -> None:
    path = write_config(configs, f"{stem}.yaml", kind=kind)
    raw = yaml.safe_load(path.read_text())
    raw["data_root"] = str(folder / "data" / stem)
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    raw["monitoring"]["history_url"] = f"sqlite:///{folder / 'history.db'}"
    raw["label_delay_partitions"] = 1
    raw["training"] |= {"holdout_partitions": 2, "window": "sliding"}
    raw["model"] |= {"registered_name": stem, **model}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("many-models")
    configs = folder / "models"
    configs.mkdir()
    _model(configs, folder, "tickets", "multiclass")
    _model(configs, folder, "demand", "regression", trainer="tests.user_code.trainers:linear")
    _model(configs, folder, "vendor", None, external=True, reference={"first": "2026-09-01", "last": "2026-09-04"})
    env = airflow_env(airflow_home(airflow_db, folder / "airflow"), configs) | {"PYTHONPATH": str(REPO)}
    drive = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "drive_models.py"), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=REPO,
    )
    assert drive.returncode == 0, (drive.stdout + drive.stderr)[-5000:]
    os.environ[CONFIG_ENV_VAR] = str(configs)
    try:
        sources = {s.suffix.removeprefix("__"): s for s in model_sources()}
    finally:
        del os.environ[CONFIG_ENV_VAR]
    return {
        "folder": folder,
        "outcomes": json.loads((folder / "outcomes.json").read_text()),
        "sources": sources,
        "configs": {k: s.config for k, s in sources.items()},
    }


def _nights(outcomes: dict) -> dict:
    return {k: v for k, v in outcomes.items() if k[:4].isdigit()}


def test_every_model_is_bootstrapped_or_adopted_and_scores_its_nights(deployment):
    out = deployment["outcomes"]
    for name in ("tickets", "demand"):
        assert out[name]["bootstrap"]["state"] == "success", out[name]["bootstrap"]["task_states"]
        assert out[name]["bootstrap"]["returns"]["bootstrap_or_challenge"] == "champion"
    for name in ("tickets", "demand", "vendor"):
        nights = _nights(out[name])
        assert nights and all(n["state"] == "success" for n in nights.values()), {
            d: n["task_states"] for d, n in nights.items()
        }
        assert all(n["dag_id"] == f"batch_scoring__{name}" for n in nights.values())


def test_each_kind_writes_its_own_predictions(deployment):
    configs, ds = deployment["configs"], "2026-09-06"
    tickets = pq.read_schema(partition_dir(configs["tickets"].data_root, "predictions", ds) / "predictions.parquet")
    assert [f.name for f in tickets.field("probabilities").type] == ["high", "low", "medium"]
    demand = pq.read_table(partition_dir(configs["demand"].data_root, "predictions", ds) / "predictions.parquet")
    assert str(demand.schema.field("prediction").type) == "double" and demand.num_rows == 800
    vendor = pq.read_table(partition_dir(configs["vendor"].data_root, "predictions", ds) / "predictions.parquet")
    assert set(vendor.column("model_version").to_pylist()) == {"1"} and set(
        vendor.column("prediction").to_pylist()
    ) <= {0, 1}


def test_estimates_stand_beside_realised_metrics_in_one_history_database(deployment):
    configs, folder = deployment["configs"], deployment["folder"]
    with sa.create_engine(f"sqlite:///{folder / 'history.db'}").connect() as conn:
        names = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT model_name FROM nights"))}
    assert names == {"tickets", "demand", "vendor"}
    for name, metric in (("tickets", "macro_f1"), ("demand", "rmse"), ("vendor", "roc_auc")):
        frame = history.read_history(configs[name])
        both = frame[frame["estimated_metric"].notna() & frame["realised_metric"].notna()]
        assert len(both), f"{name}: no night has both an estimate and a realised value"
        assert set(both["metric"]) == {metric}
        assert (frame["model_name"] == name).all()


def test_the_gate_judges_each_model_on_its_own_metric_and_the_trainer_is_the_users(deployment):
    out, configs = deployment["outcomes"], deployment["configs"]
    for name, metric in (("tickets", "macro_f1"), ("demand", "rmse")):
        retrain = out[name]["retrain"]
        gate = retrain["returns"]["evaluate_gate"]
        assert retrain["state"] == "success", retrain["task_states"]
        assert metric in gate["metrics"]["candidate"] and metric in gate["metrics"]["champion"]
        assert gate["comparison"] is not None
        if not gate["passed"]:
            assert any(metric in reason for reason in gate["reasons"])
        else:
            assert out[name]["rollback"]["state"] == "success"
            moves = [(e.action, e.to_version) for e in read_audit(configs[name])]
            assert moves[-2:] == [(AuditAction.PROMOTE, gate["candidate"]), (AuditAction.ROLLBACK, "1")]
    models = Registry.open(configs["demand"])
    assert type(models.load_model(models.version("1"))[-1]).__name__ == "LinearRegression"


def test_an_external_model_is_adopted_monitored_and_rolled_back_never_retrained(deployment):
    out, config = deployment["outcomes"]["vendor"], deployment["configs"]["vendor"]
    assert "retrain_model__vendor" not in json.dumps(out)
    moves = [(e.action, e.to_version) for e in read_audit(config)]
    assert moves == [
        (AuditAction.ADOPT, out["first_version"]),
        (AuditAction.ADOPT, out["second_version"]),
        (AuditAction.ROLLBACK, out["first_version"]),
    ]
    assert out["rollback"]["state"] == "success"
    assert Registry.open(config).champion().version == out["first_version"]


def test_the_overview_lists_every_model(deployment):
    page = render_overview(list(deployment["sources"].values()), "/monitoring")
    for name, kind in (("tickets", "multiclass"), ("demand", "regression"), ("vendor", "binary (external)")):
        assert f'href="/monitoring/model/{name}/"' in page and f">{kind}<" in page
