"""A model trained and registered outside the product: adopted from the champion alias, scored and monitored."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import pyarrow.parquet as pq
import pytest
from conftest import START, write_config
from mlflow import MlflowClient

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.contracts import AuditAction
from pipelines.core.errors import NoChampionError
from pipelines.flows import evaluation, nightly, scoring
from pipelines.governance import audit, promotion
from pipelines.governance.registry import Registry, init_store
from pipelines.storage import history
from tests.user_code.notebook import notebook_experiment, register_elsewhere

REFERENCE = {"first": START.isoformat(), "last": (START + timedelta(days=4)).isoformat()}


def test_an_external_champion_is_adopted_monitored_estimated_and_rolled_back(tmp_path):
    config = load_config(write_config(tmp_path, model={"external": True, "reference": REFERENCE}))
    sample_data.generate(config.data_root, START, 10, 1500, label_delay_days=3)
    init_store(config)
    with pytest.raises(NoChampionError):
        Registry.open(config).champion()
    first = register_elsewhere(config, START, 11)
    ds = (START + timedelta(days=6)).isoformat()
    validated = nightly.validate_partition(config, ds, "night-1")
    assert validated.model.version == first
    entries = audit.read_audit(config)
    assert [(e.action, e.to_version) for e in entries] == [(AuditAction.ADOPT, first)]
    models = Registry.open(config)
    card = models.model_card(validated.model)
    assert card.external and set(card.holdout_days) == {(START + timedelta(days=d)).isoformat() for d in range(5)}
    assert card.metrics["roc_auc"] > 0.6  # measured on the labelled reference partitions
    scored = scoring.score_partition(config, ds, validated.model, "night-1")
    assert "model.external" in scored.engine_reason
    night = nightly.monitor_night(config, validated, scored, "night-1")
    assert night.estimated_roc_auc is not None
    evaluation.evaluate_labels(config)
    # the user registers a second version and moves the alias themselves: adopted (audited) on the next night
    second = register_elsewhere(config, START + timedelta(days=1), 11)
    nightly.validate_partition(config, (START + timedelta(days=7)).isoformat(), "night-2")
    assert [(e.action, e.to_version) for e in audit.read_audit(config)][-1] == (AuditAction.ADOPT, second)
    # and an operator can roll back to the first, as for any model
    promotion.rollback(config, None, "the new version misbehaves", "oncall", "rollback-1")
    assert Registry.open(config).champion().version == first
    assert history.night(config, ds, config.model.registered_name, first)["estimated_roc_auc"] is not None


class _DemandModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model as another team would register it: no scikit-learn flavour, `predict` returns the values."""

    def predict(self, context, model_input, params=None):
        return (model_input["loan_amount"].to_numpy() * 0.01).round(2)


def test_an_external_pyfunc_regression_model_is_scored_and_estimated(tmp_path):
    config = load_config(write_config(tmp_path, kind="regression", model={"external": True, "reference": REFERENCE}))
    sample_data.generate(config.data_root, START, 8, 800, label_delay_days=2, kind="regression")
    init_store(config)
    with mlflow.start_run(experiment_id=notebook_experiment(config), run_name="another team"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_DemandModel(), registered_model_name=config.model.registered_name
        )
    MlflowClient(config.tracking_uri).set_registered_model_alias(
        config.model.registered_name, "champion", str(info.registered_model_version)
    )
    ds = (START + timedelta(days=6)).isoformat()
    validated = nightly.validate_partition(config, ds, "night-1")
    scored = scoring.score_partition(config, ds, validated.model, "night-1")
    table = pq.read_table(scored.path)
    incoming = sample_data.generate_chunk(START + timedelta(days=6), 0, 800, 7, sample_data.DriftSpec(), "regression")
    assert table.column("prediction").to_pylist() == (incoming["loan_amount"] * 0.01).round(2).tolist()
    night = nightly.monitor_night(config, validated, scored, "night-1")
    assert set(night.estimated_metrics) == {"mae", "rmse"}
    card = Registry.open(config).model_card(validated.model)
    assert card.external and {"mae", "rmse"} <= set(card.metrics)
