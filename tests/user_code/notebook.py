"""What a data scientist does in a notebook: fit a model outside the product, register it, move the alias."""

from __future__ import annotations

from datetime import date

import mlflow
from mlflow import MlflowClient
from mlflow.models import infer_signature

from harness import sample_data
from pipelines.core.config import PipelineConfig
from tests.user_code.trainers import linear


def register_elsewhere(config: PipelineConfig, day: date, seed: int) -> str:
    """Fit a binary scikit-learn Pipeline on a day of generated applications, log it with MLflow (cloudpickle, not
    this product's way), register it under the config's name and point `champion` at it; return the version."""
    frame = sample_data.generate_chunk(day, 0, 3000, seed, sample_data.DriftSpec())
    features = config.features.all
    model = linear(config.features.numeric, config.features.categorical, "binary", seed).fit(
        frame[features], frame["defaulted"]
    )
    with mlflow.start_run(experiment_id=notebook_experiment(config), run_name="notebook"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=config.model.registered_name,
            signature=infer_signature(frame[features].head(), model.predict_proba(frame[features].head())),
            serialization_format="cloudpickle",
        )
    version = str(info.registered_model_version)
    MlflowClient(config.tracking_uri).set_registered_model_alias(config.model.registered_name, "champion", version)
    return version


def notebook_experiment(config: PipelineConfig) -> str:
    """The notebook's own MLflow experiment in the config's store, its artifacts beside the store's (MLflow's
    Default experiment would put them in ./mlruns of whatever folder the process runs in)."""
    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(config.tracking_uri)
    found = client.get_experiment_by_name("notebook")
    if found is not None:
        return str(found.experiment_id)
    location = (config.mlflow.store_dir / "notebook-artifacts").as_uri()
    return str(client.create_experiment("notebook", artifact_location=location))
