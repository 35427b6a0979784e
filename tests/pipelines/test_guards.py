"""Nothing promoted by accident, nothing created by accident: a missing champion alias, store or artifacts folder."""

import shutil

import pytest
from mlflow import MlflowClient

from pipelines.core.errors import ChampionMissingError, StoreMissingError
from pipelines.flows import retraining
from pipelines.flows.nightly import validate_partition
from pipelines.governance import audit, registry
from pipelines.governance.promotion import champion_matches_audit, rollback
from pipelines.governance.registry import Registry
from tests.conftest import copy_lake, score_with_champion


@pytest.fixture
def lake(champion_lake, tmp_path):
    return copy_lake(champion_lake, tmp_path)


def test_a_deleted_champion_alias_is_never_replaced_without_the_gate(lake):
    first = Registry.open(lake).champion()
    MlflowClient(lake.tracking_uri).delete_registered_model_alias(first.name, "champion")
    with pytest.raises(ChampionMissingError) as scored:
        score_with_champion(lake, "2026-09-11", "run")
    message = str(scored.value)
    assert f"v{first.version} as champion" in message and "rollback_model" in message and "bootstraps" not in message
    entries = audit.read_audit(lake)
    candidate = retraining.train_candidate(lake, retraining.select_training_window(lake), {"reason": "after the loss"})
    with pytest.raises(ChampionMissingError, match="only replaces a champion through the gate"):
        retraining.bootstrap_or_challenge(lake, candidate, "run-retrain")
    assert Registry.open(lake).alias_version("champion") is None
    assert Registry.open(lake).alias_version("challenger").version == candidate.version
    assert audit.read_audit(lake) == entries  # nothing audited, nothing moved
    entry = rollback(lake, first.version, "alias was deleted by a cleanup script", "oncall", "run-restore")
    assert entry.action == "restore" and entry.from_version is None and entry.to_version == first.version
    assert Registry.open(lake).champion().version == first.version and champion_matches_audit(lake)


def test_only_a_former_champion_can_be_restored(lake):
    first = Registry.open(lake).champion()
    candidate = retraining.train_candidate(lake, retraining.select_training_window(lake), {"reason": "x"})
    MlflowClient(lake.tracking_uri).delete_registered_model_alias(first.name, "champion")
    from pipelines.governance.promotion import PromotionError

    with pytest.raises(PromotionError, match="was never champion"):
        rollback(lake, candidate.version, "sneak it in", "mallory", "run")
    with pytest.raises(PromotionError, match="name the version to restore"):
        rollback(lake, None, "no target", "oncall", "run")


def test_a_missing_store_is_an_error_and_is_not_recreated(lake, tmp_path):
    database = lake.mlflow.store_dir / "mlflow.db"
    database.rename(tmp_path / "moved.db")
    for step in (
        lambda: score_with_champion(lake, "2026-09-11", "run"),
        lambda: validate_partition(lake, "2026-09-11", "run"),
        lambda: retraining.select_training_window(lake),
    ):
        with pytest.raises(StoreMissingError, match="does not exist") as info:
            step()
        assert "restore it (and its artifacts folder) from backup" in str(info.value) and "Do not create" in str(
            info.value
        )
        assert not database.exists()


def test_missing_artifacts_are_a_clear_error(lake, tmp_path):
    shutil.move(lake.mlflow.store_dir / "artifacts", tmp_path / "moved-artifacts")
    registry._load_model.cache_clear()
    # a data root keeps the artifacts it has read (monitoring/models/<run id>/): another test may have validated a
    # night on the shared lake before it was copied here; a cold data root must name the missing folder
    shutil.rmtree(lake.work_root / "monitoring" / "models", ignore_errors=True)
    for step in (
        lambda: score_with_champion(lake, "2026-09-11", "run"),
        lambda: validate_partition(lake, "2026-09-11", "run"),
    ):
        with pytest.raises(StoreMissingError, match="restore the MLflow artifacts folder"):
            step()
    assert not (lake.data_root / "predictions" / "ds=2026-09-11" / "predictions.parquet").exists()
