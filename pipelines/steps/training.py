"""Training: the labelled window, the scikit-learn pipeline, and its held-out evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from pipelines.core.config import PipelineConfig
from pipelines.core.errors import PipelineError, TrainingNotReady
from pipelines.core.paths import INCOMING, LABELS, QUARANTINE
from pipelines.steps.drift import calibrate_thresholds
from pipelines.steps.labels import id_key, read_labels
from pipelines.steps.performance import classification_metrics
from pipelines.steps.profile import data_profile
from pipelines.storage import history, report_store
from pipelines.storage.partitions import list_partitions, partition_digest, partition_dir, partition_files
from pipelines.storage.schema import incoming_partition, read_table

log = logging.getLogger(__name__)


def training_partitions(
    config: PipelineConfig, end: date | None = None, start: date | None = None, window_partitions: int | None = None
) -> list[date]:
    """Return the labelled, non-quarantined partition dates of the training window ending at `end`.

    `end` defaults to the newest labelled partition; the window holds the newest `window_partitions`
    (default training.window_partitions) such partitions up to `end`, never before `start` when one is given.
    """
    labelled = set(list_partitions(config.data_root, LABELS)) & set(list_partitions(config.data_root, INCOMING))
    shared = report_store.published(config, QUARANTINE)  # with a report store, quarantine is what it holds
    if shared is None:
        quarantined = {d for d in labelled if partition_dir(config.work_root, QUARANTINE, d).is_dir()}
    else:
        quarantined = {d for d in labelled if f"ds={d.isoformat()}" in shared}
    # and what the history database recorded: a record withdrawn from the bucket by someone else is still refused
    refused = history.quarantined_nights(config)
    quarantined |= {d for d in labelled if d.isoformat() in refused}
    usable = sorted(d for d in labelled - quarantined if (end is None or d <= end) and (start is None or d >= start))
    return usable[-(window_partitions or config.training.window_partitions) :]


def load_labelled(config: PipelineConfig, days: list[date]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Return features joined to labels by id for the given days (column `ds` added) and each partition's digest."""
    frames, digests = [], {}
    for day in days:
        ds = day.isoformat()
        try:
            partition = incoming_partition(config, ds)
        except PipelineError as exc:
            log.warning("left out of training: %s", exc)
            continue
        features = read_table(partition).to_pandas()
        labels = read_labels(config, ds).labels.rename(columns={"target": config.target})
        frame = features.assign(key=id_key(features[config.id_column])).merge(labels, on="key", how="inner")
        frames.append(frame.drop(columns="key").drop_duplicates(config.id_column, keep=False).assign(ds=ds))
        digests[ds] = partition_digest(list(partition.files) + partition_files(config.data_root, LABELS, day))
    if not frames:
        raise TrainingNotReady(
            "no labelled partitions in the training window: generate or land labels/ds=... partitions, "
            "or widen training.window_partitions"
        )
    return pd.concat(frames, ignore_index=True), digests


def build_model(config: PipelineConfig) -> Pipeline:
    """Return an unfitted pipeline: ordinal-encoded categoricals fed to HistGradientBoosting's native support."""
    categorical = config.features.categorical
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan, max_categories=250
    )
    columns = ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", "passthrough", config.features.numeric)],
        verbose_feature_names_out=False,
    )
    classifier = HistGradientBoostingClassifier(
        categorical_features=list(range(len(categorical))),
        random_state=config.training.seed,
        **config.model.hyperparameters,
    )
    return Pipeline([("columns", columns), ("classifier", classifier)])


@dataclass
class TrainedModel:
    """A fitted pipeline with its held-out metrics and what later steps need from its training data."""

    model: Pipeline
    metrics: dict[str, float]
    train_days: list[str]
    holdout_days: list[str]
    profile: dict[str, Any]
    reference: pd.DataFrame
    holdout_scores: pd.DataFrame
    drift_thresholds: dict[str, dict[str, Any]]


def fit_and_evaluate(config: PipelineConfig, frame: pd.DataFrame) -> TrainedModel:
    """Fit on the older partitions of the window and evaluate on the newest `training.holdout_partitions`."""
    days = sorted(frame["ds"].unique())
    if len(days) < 2:
        raise TrainingNotReady(f"need at least 2 labelled partitions to train and hold out, found {len(days)}")
    holdout_days = days[-min(config.training.holdout_partitions, len(days) - 1) :]
    is_holdout = frame["ds"].isin(holdout_days).to_numpy()
    train, holdout = frame[~is_holdout], frame[is_holdout]
    if len(train) < config.training.min_rows:
        raise TrainingNotReady(
            f"only {len(train)} labelled training rows, training.min_rows is {config.training.min_rows}: "
            "wait for more labels or lower training.min_rows"
        )
    features, target = config.features.all, config.target
    if train[target].nunique() < 2:
        raise TrainingNotReady(f"target {target!r} has a single class in the training window: wait for more labels")
    model = build_model(config).fit(train[features], train[target])
    score = model.predict_proba(holdout[features])[:, 1]
    metrics = classification_metrics(holdout[target].to_numpy(), score, config.model.decision_threshold)
    log.info(
        "trained on %s rows (%d days), held-out metrics %s", f"{len(train):,}", len(days) - len(holdout_days), metrics
    )
    sample_rows = min(config.training.reference_sample_rows, len(train))
    reference = train.sample(n=sample_rows, random_state=config.training.seed)[[*features, target]]
    reference = reference.assign(score=model.predict_proba(reference[features])[:, 1]).reset_index(drop=True)
    rows_per_partition = int(frame.groupby("ds").size().median())
    thresholds = calibrate_thresholds(config, reference, rows_per_partition, seed=config.training.seed)
    return TrainedModel(
        model=model,
        metrics=metrics,
        train_days=[d for d in days if d not in holdout_days],
        holdout_days=list(holdout_days),
        profile=data_profile(train, config),
        reference=reference,
        holdout_scores=pd.DataFrame(
            {"score": score, "label": holdout[target].to_numpy(), "ds": holdout["ds"].to_numpy()}
        ),
        drift_thresholds=thresholds,
    )
