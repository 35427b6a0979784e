import json
from datetime import date

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.core.errors import NoChampionError, TrainingDataError
from pipelines.flows import retraining
from pipelines.governance import registry
from pipelines.governance.registry import Registry
from pipelines.steps.performance import classification_metrics
from pipelines.steps.training import load_labelled, training_partitions
from pipelines.storage.partitions import partition_digest, partition_files


def test_no_champion_says_to_run_retrain_model(config):
    registry.init_store(config)
    with pytest.raises(NoChampionError, match="run the retrain_model DAG"):
        Registry.open(config).champion()


def test_training_needs_labelled_partitions(config):
    with pytest.raises(TrainingDataError, match="at least 2 are needed"):
        retraining.select_training_window(config)


def test_window_skips_unlabelled_and_quarantined_days(champion_lake):
    days = training_partitions(champion_lake)
    assert days[0] == date(2026, 9, 1) and days[-1] == date(2026, 9, 9)  # labels lag 3 days behind day 12
    (champion_lake.data_root / "quarantine" / "ds=2026-09-05").mkdir(parents=True, exist_ok=True)
    try:
        assert date(2026, 9, 5) not in training_partitions(champion_lake)
    finally:
        (champion_lake.data_root / "quarantine" / "ds=2026-09-05").rmdir()


def test_bootstrap_registers_the_champion_with_lineage(champion_lake):
    ref = Registry.open(champion_lake).champion()
    client = MlflowClient(champion_lake.tracking_uri)
    version = client.get_model_version(ref.name, ref.version)
    assert str(client.get_registered_model(ref.name).aliases["champion"]) == ref.version
    assert version.run_id == ref.run_id
    tags = version.tags
    assert tags["airflow_run_id"] == "pytest"
    assert tags["training.days"].startswith("2026-09-01..")
    assert tags["code_version"]
    run = client.get_run(ref.run_id)
    assert 0.65 < run.data.metrics["holdout_roc_auc"] < 0.95
    assert set(run.data.metrics) >= {f"holdout_{m}" for m in ("roc_auc", "precision", "recall", "f1", "log_loss")}
    from mlflow.artifacts import download_artifacts

    path = download_artifacts(
        run_id=ref.run_id, artifact_path=registry.LINEAGE_ARTIFACT, tracking_uri=champion_lake.tracking_uri
    )
    lineage = json.loads(open(path).read())["partitions"]
    expected = partition_files(champion_lake.data_root, "incoming", "2026-09-03") + partition_files(
        champion_lake.data_root, "labels", "2026-09-03"
    )
    assert lineage["2026-09-03"] == partition_digest(expected)


def test_logged_model_has_signature_and_explicit_requirements(champion_lake):
    from mlflow.models import get_model_info

    info = get_model_info(Registry.open(champion_lake).champion().uri)
    assert [c.name for c in info.signature.inputs.inputs] == champion_lake.features.all
    requirements = (champion_lake.artifact_root).rglob("requirements.txt")
    text = next(requirements).read_text()
    assert "scikit-learn==" in text and "apache-airflow" not in text


def test_loaded_champion_reproduces_its_holdout_auc(champion_lake):
    ref = Registry.open(champion_lake).champion()
    model = Registry.open(champion_lake).load_model(ref)
    days = retraining.select_training_window(champion_lake).days
    frame, _ = load_labelled(champion_lake, [date.fromisoformat(d) for d in days[-3:]])
    score = model.predict_proba(frame[champion_lake.features.all])[:, 1]
    metrics = classification_metrics(frame[champion_lake.target].to_numpy(), score, 0.3)
    logged = MlflowClient(champion_lake.tracking_uri).get_run(ref.run_id).data.metrics["holdout_roc_auc"]
    assert metrics["roc_auc"] == pytest.approx(logged, abs=1e-9)


def test_classification_metrics_match_definitions():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.9])
    m = classification_metrics(y, s, 0.5)
    assert m["roc_auc"] == 0.75
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5


def test_precision_and_recall_are_not_interchangeable():
    y = np.array([0, 1, 1, 1, 0])
    s = np.array([0.9, 0.8, 0.2, 0.1, 0.1])  # at 0.5: 2 predicted positive (1 right) of 3 actual positives
    m = classification_metrics(y, s, 0.5)
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 3) and m["f1"] == pytest.approx(0.4)
