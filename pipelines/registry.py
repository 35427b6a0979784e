"""The MLflow registry: logging candidates with lineage, the `champion` alias, and loading models."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.errors import NoChampionError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PROFILE_ARTIFACT = "data_profile.json"
REFERENCE_ARTIFACT = "reference_sample.parquet"
HOLDOUT_ARTIFACT = "holdout_scores.parquet"
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


def client(config: PipelineConfig) -> Any:
    """Return an MlflowClient on the configured store, creating the experiment (with its artifact folder) once."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    if config.tracking_uri.startswith("sqlite:///"):
        config.mlflow.store_dir.mkdir(parents=True, exist_ok=True)
    mlflow_client = MlflowClient(config.tracking_uri, config.tracking_uri)
    if mlflow_client.get_experiment_by_name(config.mlflow.experiment) is None:
        location = None
        if config.mlflow.tracking_uri is None:
            location = config.artifact_root.as_uri()
        mlflow_client.create_experiment(config.mlflow.experiment, artifact_location=location)
    return mlflow_client


def init_store(config: PipelineConfig) -> str:
    """Create the tracking database and experiment once, before any concurrent use; return the URI."""
    client(config)
    return config.tracking_uri


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
        "training.days": f"{trained.train_days[0]}..{trained.train_days[-1]} ({len(trained.train_days)} days)",
        "training.holdout_days": ",".join(trained.holdout_days),
        "training.window_digest": _combined_digest(digests),
        "code_version": code_version(),
        **lineage,
    }
    experiment = mlflow_client.get_experiment_by_name(config.mlflow.experiment)
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=lineage.get("reason", "train")) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"decision_threshold": config.model.decision_threshold, **config.model.hyperparameters})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in trained.metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / PROFILE_ARTIFACT).write_text(json.dumps(trained.profile, indent=2))
            (folder / LINEAGE_ARTIFACT).write_text(json.dumps({"partitions": digests}, indent=2))
            trained.reference.to_parquet(folder / REFERENCE_ARTIFACT, index=False)
            trained.holdout_scores.to_parquet(folder / HOLDOUT_ARTIFACT, index=False)
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


def champion(config: PipelineConfig) -> ModelRef:
    """Return the current champion, pinned to its version; raise NoChampionError when there is none."""
    ref = alias_version(config, CHAMPION)
    if ref is None:
        raise NoChampionError(
            f"registered model {config.model.registered_name!r} has no '{CHAMPION}' version in "
            f"{config.tracking_uri}: run the retrain_model DAG (it bootstraps the first model)"
        )
    return ref


def set_alias(config: PipelineConfig, alias: str, ref: ModelRef) -> None:
    """Point `alias` at a model version."""
    client(config).set_registered_model_alias(ref.name, alias, ref.version)
    log.info("alias %s of %s now points at version %s", alias, ref.name, ref.version)


def load_model(config: PipelineConfig, ref: ModelRef) -> Any:
    """Load the scikit-learn pipeline of a pinned model version."""
    import mlflow.sklearn

    client(config)
    return mlflow.sklearn.load_model(ref.uri)


def load_profile(config: PipelineConfig, ref: ModelRef) -> dict[str, Any]:
    """Return the training-data profile stored with a model version's run."""
    import mlflow.artifacts

    client(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=ref.run_id, artifact_path=PROFILE_ARTIFACT, dst_path=tmp)
        return json.loads(Path(path).read_text())
