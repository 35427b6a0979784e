"""The MLflow registry: logging candidates with lineage, the `champion` alias, and loading models."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pipelines import audit, history
from pipelines.config import PipelineConfig
from pipelines.errors import AuditIntegrityError, ChampionMissingError, NoChampionError, StoreMissingError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PROFILE_ARTIFACT = "data_profile.json"
REFERENCE_ARTIFACT = "reference_sample.parquet"
HOLDOUT_ARTIFACT = "holdout_scores.parquet"
DRIFT_THRESHOLDS_ARTIFACT = "drift_thresholds.json"  # per-column alarm thresholds calibrated at registration
LINEAGE_ARTIFACT = "training_partitions.json"
# Types our own pipeline stores that skops does not trust by default; we only load models we logged.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, pinned (never an alias that can move underneath a reader)."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _sqlite_file(config: PipelineConfig) -> Path | None:
    uri = config.tracking_uri
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def client(config: PipelineConfig, create: bool = False) -> Any:
    """Return an MlflowClient on the configured store.

    A missing SQLite store raises StoreMissingError: MLflow would otherwise create an empty one, and
    a night scored or a model registered there would be lost to the real registry. Only `create=True`
    (the init-mlflow command, the demo and the first bootstrap of a new deployment) creates the store
    and the experiment.
    """
    import mlflow
    from mlflow import MlflowClient

    database = _sqlite_file(config)
    if database is not None and not (database.is_file() and database.stat().st_size > 0):
        if not create:
            advice = (
                "This deployment has no history yet: run the retrain_model DAG (it creates the store and bootstraps "
                "the first model), or `python -m pipelines.cli init-mlflow`"
                if is_new_deployment(config) else
                "This deployment has a monitoring history and an audit log, so the store existed: restore it (and its "
                "artifacts folder) from backup or point the config at it. Do not create a new one: models would be "
                "registered where the real registry cannot see them (init-mlflow only for a brand-new deployment)"
            )
            raise StoreMissingError(
                f"the MLflow store {database} does not exist (mlflow.store_dir / PIPELINE_MLFLOW_TRACKING_URI): nothing "
                f"was read or written. {advice}"
            )
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    mlflow_client = MlflowClient(config.tracking_uri, config.tracking_uri)
    if create and mlflow_client.get_experiment_by_name(config.mlflow.experiment) is None:
        location = None
        if config.mlflow.tracking_uri is None:
            location = config.artifact_root.as_uri()
        mlflow_client.create_experiment(config.mlflow.experiment, artifact_location=location)
    return mlflow_client


def is_new_deployment(config: PipelineConfig) -> bool:
    """Return whether nothing shows an earlier deployment: no audit entry and no monitored night."""
    return not audit.read_audit(config) and not history.has_nights(config)


def init_store(config: PipelineConfig) -> str:
    """Create the tracking database and experiment once, before any concurrent use; return the URI."""
    client(config, create=True)
    return config.tracking_uri


def experiment_id(config: PipelineConfig, mlflow_client: Any) -> str:
    """Return the configured experiment's id; StoreMissingError if the store has no such experiment."""
    experiment = mlflow_client.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        raise StoreMissingError(
            f"the MLflow store {config.tracking_uri} has no experiment {config.mlflow.experiment!r}: it is not this "
            "deployment's store (or was emptied). Restore it from backup or fix mlflow.tracking_uri / mlflow.experiment"
        )
    return experiment.experiment_id


T = TypeVar("T")


def _artifacts(config: PipelineConfig, ref: ModelRef, what: str, load: Callable[[], T]) -> T:
    """Run `load`; a missing artifact becomes StoreMissingError naming the version and where its files should be."""
    from mlflow.exceptions import MlflowException

    try:
        return load()
    except (MlflowException, OSError) as exc:
        if isinstance(exc, MlflowException) and exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INTERNAL_ERROR", "NOT_FOUND"):
            raise
        try:
            location = client(config).get_run(ref.run_id).info.artifact_uri
        except MlflowException:
            location = "unknown"
        raise StoreMissingError(
            f"the {what} of {ref.name} v{ref.version} (run {ref.run_id}) cannot be read from {location} "
            f"({type(exc).__name__}: {str(exc)[:200]}): restore the MLflow artifacts folder "
            f"({config.artifact_root}) from backup; retrying cannot help"
        ) from exc


def code_version() -> str:
    """Return the git commit of this code (with `-dirty` for local edits), or `unknown` outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def log_candidate(config: PipelineConfig, trained: Any, digests: dict[str, str], lineage: dict[str, str]) -> ModelRef:
    """Log a trained model with its metrics, lineage and artifacts, register it, and return the new version."""
    import mlflow
    import pandas as pd
    import sklearn
    from mlflow.models import infer_signature

    mlflow_client = client(config)
    features = config.features.all
    example = trained.reference[features].head(5)
    signature = infer_signature(example, trained.model.predict_proba(example)[:, 1])
    tags = {
        "training.days": f"{trained.train_days[0]}..{trained.train_days[-1]} ({len(trained.train_days)} partitions)",
        "training.holdout_days": ",".join(trained.holdout_days),
        "training.window_digest": _combined_digest(digests),
        "code_version": code_version(),
        **lineage,
    }
    with mlflow.start_run(experiment_id=experiment_id(config, mlflow_client), run_name=lineage.get("reason", "train")) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"decision_threshold": config.model.decision_threshold, **config.model.hyperparameters})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in trained.metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / PROFILE_ARTIFACT).write_text(json.dumps(trained.profile, indent=2))
            (folder / LINEAGE_ARTIFACT).write_text(json.dumps({"partitions": digests}, indent=2))
            trained.reference.to_parquet(folder / REFERENCE_ARTIFACT, index=False)
            trained.holdout_scores.to_parquet(folder / HOLDOUT_ARTIFACT, index=False)
            (folder / DRIFT_THRESHOLDS_ARTIFACT).write_text(json.dumps(trained.drift_thresholds, indent=2))
            mlflow.log_artifacts(str(folder))
        info = mlflow.sklearn.log_model(
            trained.model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"],
            registered_model_name=config.model.registered_name,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(config.model.registered_name, version, key, value)
    log.info("registered %s version %s (run %s)", config.model.registered_name, version, run.info.run_id)
    return ModelRef(config.model.registered_name, version, run.info.run_id)


def _combined_digest(digests: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def alias_version(config: PipelineConfig, alias: str) -> ModelRef | None:
    """Return the version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    try:
        version = mlflow_client.get_model_version_by_alias(config.model.registered_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    return ModelRef(config.model.registered_name, str(version.version), version.run_id)


def former_champion(config: PipelineConfig) -> str | None:
    """Return a sentence naming the champion on record (audit log or `previous` alias), or None for a new deployment."""
    try:
        entries = audit.read_audit(config)
    except AuditIntegrityError as exc:
        return f"the audit log cannot be verified ({exc})"
    last = audit.expected_champion(entries)
    if last is not None:
        return f"the audit log shows v{last['to_version']} as champion (last move: {last['action']} at {last['at'][:19]})"
    previous = alias_version(config, "previous")
    if previous is not None:
        return f"the registry's 'previous' alias points at v{previous.version}, a former champion"
    return None


def champion(config: PipelineConfig) -> ModelRef:
    """Return the current champion, pinned to its version; raise NoChampionError when there is none."""
    ref = alias_version(config, CHAMPION)
    if ref is not None:
        return ref
    on_record = former_champion(config)
    if on_record:
        raise ChampionMissingError(
            f"registered model {config.model.registered_name!r} has no '{CHAMPION}' alias in {config.tracking_uri}, "
            f"but {on_record}: the alias was deleted or the registry restored from an older copy. Nothing was "
            "scored. Re-establish it with the rollback_model DAG (target_version = the version to restore; it is "
            "audited), or restore the registry from backup"
        )
    raise NoChampionError(
        f"registered model {config.model.registered_name!r} has no '{CHAMPION}' version in "
        f"{config.tracking_uri} and none is on record: run the retrain_model DAG (it bootstraps the first model)"
    )


def set_alias(config: PipelineConfig, alias: str, ref: ModelRef) -> None:
    """Point `alias` at a model version."""
    client(config).set_registered_model_alias(ref.name, alias, ref.version)
    log.info("alias %s of %s now points at version %s", alias, ref.name, ref.version)


def load_model(config: PipelineConfig, ref: ModelRef) -> Any:
    """Load the scikit-learn pipeline of a pinned model version (kept per process: a version never changes)."""
    client(config)
    return _artifacts(config, ref, "model", lambda: _load_model(config.tracking_uri, ref))


@lru_cache(maxsize=4)
def _load_model(tracking_uri: str, ref: ModelRef) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.load_model(ref.uri)


def download_artifact(config: PipelineConfig, ref: ModelRef, name: str, folder: Path) -> Path:
    """Download one artifact of a model version's run into `folder`; StoreMissingError if it is gone."""
    import mlflow.artifacts

    client(config)
    return Path(_artifacts(config, ref, name, lambda: mlflow.artifacts.download_artifacts(
        run_id=ref.run_id, artifact_path=name, dst_path=str(folder), tracking_uri=config.tracking_uri)))


def load_profile(config: PipelineConfig, ref: ModelRef) -> dict[str, Any]:
    """Return the training-data profile stored with a model version's run."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(download_artifact(config, ref, PROFILE_ARTIFACT, Path(tmp)).read_text())
