"""Drive a deployment of several models through real Airflow DAG runs in one process (see test_a_deployment_of_models.py).

Usage: drive_models.py OUT_DIR. PIPELINE_CONFIG names a folder of model configs: `tickets` (multiclass, built-in
trainer), `demand` (regression, a user's scikit-learn Pipeline as model.trainer) and `vendor` (binary, registered
outside the product and only scored and monitored). Labels land one partition late. Writes OUT_DIR/outcomes.json.
"""

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from harness import sample_data
from harness.runner import run_dag
from pipelines.core.config import model_sources
from pipelines.governance.registry import init_store
from tests.user_code.notebook import register_elsewhere

out_dir = Path(sys.argv[1])
START, DAYS, ROWS, BOOTSTRAP_END, FIRST_NIGHT = datetime(2026, 9, 1).date(), 8, 800, 3, 4
DRIFT = sample_data.DriftSpec(START + timedelta(days=FIRST_NIGHT), covariate=True, concept=True)
models = {s.suffix.removeprefix("__"): s.config for s in model_sources()}
dates = [START + timedelta(days=i) for i in range(DAYS)]


def kind_of(name: str) -> str:
    return str(models[name].model.kind)


def labels(name: str, day_index: int) -> None:
    day = dates[day_index]
    sample_data.write_day(models[name].data_root, day, ROWS, 7, DRIFT, True, with_features=False, kind=kind_of(name))


def night(name: str, index: int) -> dict:
    logical = datetime.combine(dates[index] + timedelta(days=1), time(2, 0), tzinfo=UTC)
    return asdict(run_dag(f"batch_scoring__{name}", logical))


outcomes: dict = {"dates": [d.isoformat() for d in dates]}
for name, config in models.items():
    sample_data.generate(
        config.data_root, START, DAYS, ROWS, 1, as_of=dates[BOOTSTRAP_END + 1], drift=DRIFT, kind=kind_of(name)
    )
init_store(models["tickets"])  # one MLflow store for the deployment (each model its own registered name)

for name in ("tickets", "demand"):
    done = outcomes[name] = {}
    done["bootstrap"] = asdict(
        run_dag(f"retrain_model__{name}", None, {"window_end": dates[BOOTSTRAP_END].isoformat(), "reason": "bootstrap"})
    )
    for index in range(FIRST_NIGHT, DAYS - 1):
        done[dates[index].isoformat()] = night(name, index)
        labels(name, index)  # the night's labels land one partition later
    done["retrain"] = asdict(
        run_dag(f"retrain_model__{name}", None, {"window": "sliding", "reason": "e2e: drift since the fourth night"})
    )
    gate = done["retrain"]["returns"].get("evaluate_gate") or {}
    if gate.get("passed"):
        done["rollback"] = asdict(run_dag(f"rollback_model__{name}", None, {"reason": "e2e: back to the first"}))

vendor = outcomes["vendor"] = {"first_version": register_elsewhere(models["vendor"], START, 11)}
for index in range(FIRST_NIGHT, DAYS - 2):
    vendor[dates[index].isoformat()] = night("vendor", index)
    labels("vendor", index)
vendor["second_version"] = register_elsewhere(models["vendor"], START, 12)
vendor[dates[DAYS - 2].isoformat()] = night("vendor", DAYS - 2)
vendor["rollback"] = asdict(run_dag("rollback_model__vendor", None, {"reason": "e2e: the new version misbehaves"}))
(out_dir / "outcomes.json").write_text(json.dumps(outcomes, default=str, indent=2))
