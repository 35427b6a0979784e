"""Training: the labelled window, the scikit-learn pipeline, and its held-out evaluation."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from pipelines.core.config import PipelineConfig
from pipelines.core.errors import PipelineError, TrainerError, TrainingNotReady
from pipelines.core.kinds import Kind
from pipelines.core.paths import INCOMING, LABELS, QUARANTINE
from pipelines.core.threads import return_freed_memory
from pipelines.steps.drift import calibrate_thresholds, reference_rows, sample_rows
from pipelines.steps.labels import id_key, read_labels
from pipelines.steps.performance import kind_metrics, metric_noise
from pipelines.steps.predictions import as_classes, model_classes, predict
from pipelines.steps.profile import data_profile
from pipelines.storage import history, report_store
from pipelines.storage.partitions import (
    list_partitions,
    partition_digest,
    partition_dir,
    partition_files,
    partition_row_count,
)
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
    """Return features joined to labels by id for the given days (column `ds` added) and each partition's digest.

    The frame holds at most training.max_cells cells (rows x features): a larger window is read as an even sample of
    each of its partitions, so the training task's memory is bounded at any width and row count.
    """
    frames, digests = [], {}
    per_partition = max(1, config.training.max_cells // max(len(config.features.all), 1) // max(len(days), 1))
    sampled = 0
    for day in days:
        ds = day.isoformat()
        try:
            partition = incoming_partition(config, ds)
        except PipelineError as exc:
            log.warning("left out of training: %s", exc)
            continue
        rows = partition_row_count(list(partition.files))
        if rows > per_partition:  # a wide or large window: an even sample of each partition, streamed
            features = sample_rows(partition, per_partition, seed=day.toordinal())
            sampled += 1
        else:
            features = read_table(partition).to_pandas()
        labels = read_labels(config, ds).labels.rename(columns={"target": config.target})
        # the join on the ids alone, then one take of the wide rows: merging the wide frame itself copies it
        # several times over (and a wide table's many small copies fragment the heap)
        ids = features[config.id_column]
        matched = pd.DataFrame({"key": id_key(ids), "_row": np.arange(len(features)), "_id": ids.to_numpy()})
        matched = matched.merge(labels, on="key", how="inner")
        matched = matched[~matched["_id"].duplicated(keep=False)]
        frame = features.iloc[matched["_row"].to_numpy()].reset_index(drop=True)
        for column in labels.columns.drop("key"):
            frame[column] = matched[column].to_numpy()
        frame["ds"] = ds
        frames.append(frame)
        digests[ds] = partition_digest(list(partition.files) + partition_files(config.data_root, LABELS, day))
    return_freed_memory()  # the reads' freed buffers, before the frame is copied for fitting
    if sampled:
        log.info(
            "training.max_cells: %d of %d partitions sampled to about %s rows each (%d features)",
            sampled,
            len(days),
            f"{per_partition:,}",
            len(config.features.all),
        )
    if not frames:
        raise TrainingNotReady(
            "no labelled partitions in the training window: generate or land labels/ds=... partitions, "
            "or widen training.window_partitions"
        )
    return pd.concat(frames, ignore_index=True), digests


def build_model(config: PipelineConfig) -> Any:
    """Return the unfitted model: the configured trainer's, else the built-in one of the kind."""
    if config.model.trainer:
        return user_model(config)
    return builtin_model(config)


def user_model(config: PipelineConfig) -> Any:
    """Call `model.trainer` ("package.module:function") and check it returned an unfitted estimator."""
    spec = str(config.model.trainer)
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise TrainerError(
            f"model.trainer {spec!r} cannot be imported ({type(exc).__name__}: {exc}): install the module on every "
            "worker (the plugins/ folder is on every Airflow component's path, or install it as a package in the image; "
            "see docs/configuration.md) or fix the name"
        ) from exc
    try:
        model = function(
            numeric=list(config.features.numeric),
            categorical=list(config.features.categorical),
            kind=str(config.model.kind),
            seed=config.training.seed,
        )
    except Exception as exc:  # the user's code: any failure is reported as its own
        raise TrainerError(f"model.trainer {spec} raised {type(exc).__name__}: {str(exc)[:300]}") from exc
    needs = ["fit", "predict"] + (["predict_proba"] if config.model.kind.classifies else [])
    missing = [name for name in needs if not callable(getattr(model, name, None))]
    if missing:
        raise TrainerError(
            f"model.trainer {spec} returned {type(model).__name__}, which has no {', '.join(missing)}: it must return an "
            f"unfitted scikit-learn-compatible estimator (a Pipeline included) for a {config.model.kind} model"
        )
    try:
        return clone(model)  # a fresh, unfitted copy: the same function called twice never shares state
    except (TypeError, RuntimeError) as exc:
        raise TrainerError(
            f"model.trainer {spec} returned {type(model).__name__}, which scikit-learn cannot clone ({exc}): return an "
            "estimator that follows scikit-learn's conventions (get_params/set_params)"
        ) from exc


def builtin_model(config: PipelineConfig) -> Pipeline:
    """Return an unfitted pipeline: ordinal-encoded categoricals fed to HistGradientBoosting's native support."""
    categorical = config.features.categorical
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan, max_categories=250
    )
    columns = ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", "passthrough", config.features.numeric)],
        verbose_feature_names_out=False,
    )
    learner = HistGradientBoostingRegressor if config.model.kind is Kind.REGRESSION else HistGradientBoostingClassifier
    estimator = learner(
        categorical_features=list(range(len(categorical))),
        random_state=config.training.seed,
        **config.model.hyperparameters,
    )
    return Pipeline([("columns", columns), ("classifier", estimator)])


@dataclass
class TrainedModel:
    """A fitted pipeline with its held-out metrics and what later steps need from its training data."""

    model: Any
    metrics: dict[str, float]
    train_days: list[str]
    holdout_days: list[str]
    profile: dict[str, Any]
    reference: pd.DataFrame
    holdout_scores: pd.DataFrame
    drift_thresholds: dict[str, dict[str, Any]]
    classes: list[str]
    metric_noise: dict[str, float]


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
    features, target, kind = config.features.all, config.target, config.model.kind
    # load_labelled's labels come from read_labels: only usable ones, already in the kind's form
    labels = pd.Series(targets(kind, train[target]), index=train.index)
    if kind.classifies and labels.nunique() < 2:
        raise TrainingNotReady(f"target {target!r} has a single class in the training window: wait for more labels")
    try:
        model = build_model(config).fit(train[features], labels)
    except TrainerError:
        raise
    except Exception as exc:
        if not config.model.trainer:
            raise
        raise TrainerError(f"the estimator of model.trainer {config.model.trainer} failed to fit: {exc}"[:600]) from exc
    return_freed_memory()  # the fit's copies of the frame
    classes = model_classes(model) if kind is Kind.MULTICLASS else []
    threshold = config.model.decision_threshold
    held = predict(model, holdout[features], kind, threshold, classes)
    y_holdout = targets(kind, holdout[target])
    metrics = kind_metrics(kind, y_holdout, held, threshold, classes)
    log.info(
        "trained on %s rows (%d days), held-out metrics %s", f"{len(train):,}", len(days) - len(holdout_days), metrics
    )
    reference = train.sample(n=min(reference_rows(config), len(train)), random_state=config.training.seed)
    reference = reference[[*features, target]]
    on_reference = predict(model, reference[features], kind, threshold, classes)
    reference = reference.assign(score=on_reference.score)
    if kind is Kind.MULTICLASS:  # the predicted class's shares are drift-tested too
        reference = reference.assign(prediction=on_reference.prediction)
    reference = reference.reset_index(drop=True)
    rows_per_partition = int(frame.groupby("ds").size().median())
    noise = champion_noise(config, y_holdout, held, classes, rows_per_partition)
    thresholds = calibrate_thresholds(config, reference, rows_per_partition, seed=config.training.seed)
    holdout_scores = pd.DataFrame({"score": held.score, "label": y_holdout, "ds": holdout["ds"].to_numpy()})
    if kind is Kind.MULTICLASS and held.probabilities is not None:
        holdout_scores = holdout_scores.assign(**{f"proba_{i}": held.probabilities[:, i] for i in range(len(classes))})
    if kind is Kind.REGRESSION:  # direct loss estimation learns the error from the features
        holdout_scores = pd.concat([holdout_scores, holdout[features].reset_index(drop=True)], axis=1)
    else:  # each segment's reference metric (monitoring.segments) is measured on its held-out rows
        segments = [c for c in config.monitoring.segments if c not in holdout_scores]
        holdout_scores = holdout_scores.assign(**{c: holdout[c].to_numpy() for c in segments})
    if len(holdout_scores) > reference_rows(config):
        holdout_scores = holdout_scores.sample(n=reference_rows(config), random_state=0)
    return TrainedModel(
        model=model,
        metrics=metrics,
        train_days=[d for d in days if d not in holdout_days],
        holdout_days=list(holdout_days),
        profile=data_profile(train, config),
        reference=reference,
        holdout_scores=holdout_scores.reset_index(drop=True),
        drift_thresholds=thresholds,
        classes=classes,
        metric_noise=noise,
    )


def champion_noise(
    config: PipelineConfig, y: np.ndarray, outputs: Any, classes: list[str], rows_per_partition: int
) -> dict[str, float]:
    """The chance drop of retraining.metric on a night of typical size, from the held-out rows."""
    name = config.retraining.metric
    noise = metric_noise(
        config.model.kind,
        name,
        y,
        outputs,
        config.model.decision_threshold,
        classes,
        rows_per_partition,
        config.monitoring.drift.calibration_quantile,
        seed=config.training.seed,
    )
    return {name: noise} if noise is not None else {}


def targets(kind: Kind, values: pd.Series) -> np.ndarray:
    """Labels as the kind compares them: 0/1 integers, class text, or floats."""
    if kind is Kind.MULTICLASS:
        return as_classes(values)
    if kind is Kind.BINARY:
        return values.to_numpy().astype(int)
    return values.to_numpy(dtype=float)
