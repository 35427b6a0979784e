"""Model performance per kind: metrics, realised metrics once labels arrive, estimates before they do.

Estimates: CBPE (confidence-based, NannyML's method) for binary and multiclass models, from probabilities
calibrated on the model's held-out data; direct loss estimation for regression (a model of the expected absolute
and squared error, fitted on the held-out rows' features and predictions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from pipelines.core.kinds import Kind
from pipelines.core.kinds import metric as metric_spec
from pipelines.steps.predictions import Outputs
from pipelines.steps.reports import evidently, save_snapshot


def classification_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Return ROC AUC, precision, recall, F1 (at the threshold) and log loss of scores against labels."""
    predicted = (score >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, score)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "log_loss": float(log_loss(y_true, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "accuracy": float((predicted == y_true).mean()),
    }


def multiclass_metrics(y_true: np.ndarray, outputs: Outputs, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over the model's classes, and log loss on the rows whose class the model knows."""
    known = np.isin(y_true, classes)
    metrics = {
        "accuracy": float(accuracy_score(y_true, outputs.prediction)),
        "macro_f1": float(f1_score(y_true, outputs.prediction, labels=classes, average="macro", zero_division=0)),
    }
    if known.any() and outputs.probabilities is not None:
        proba = np.clip(outputs.probabilities[known], 1e-7, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
        metrics["log_loss"] = float(log_loss(y_true[known], proba, labels=classes))
    return metrics


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² (from two rows) and MAPE (only when no true value is zero: it is undefined there)."""
    y, p = np.asarray(y_true, float), np.asarray(predicted, float)
    metrics = {"mae": float(mean_absolute_error(y, p)), "rmse": float(np.sqrt(np.mean((y - p) ** 2)))}
    if len(y) >= 2 and np.ptp(y) > 0:
        metrics["r2"] = float(r2_score(y, p))
    if len(y) and (np.abs(y) > 1e-12).all():
        metrics["mape"] = float(np.mean(np.abs((y - p) / y)))
    return metrics


def kind_metrics(
    kind: Kind, y_true: np.ndarray, outputs: Outputs, threshold: float = 0.5, classes: list[str] | None = None
) -> dict[str, float]:
    """The metrics of the kind (core.kinds.METRICS) of outputs against labels."""
    kind = Kind(kind)
    if kind is Kind.BINARY:
        return classification_metrics(np.asarray(y_true, int), outputs.score, threshold)
    if kind is Kind.MULTICLASS:
        return multiclass_metrics(np.asarray(y_true, object), outputs, classes or [])
    return regression_metrics(y_true, outputs.prediction)


def metric_value(
    kind: Kind, name: str, y_true: np.ndarray, outputs: Outputs, threshold: float, classes: list[str]
) -> float:
    """One metric of outputs against labels (the gate's bootstrap computes one metric many times)."""
    kind = Kind(kind)
    if kind is Kind.BINARY and name != "log_loss" and name != "accuracy":
        if name == "roc_auc":
            return float(roc_auc_score(y_true, outputs.score))
        fn = {"precision": precision_score, "recall": recall_score, "f1": f1_score}[name]
        return float(fn(y_true, (outputs.score >= threshold).astype(int), zero_division=0))
    if kind is Kind.MULTICLASS and name == "macro_f1":  # the gate's bootstrap: only the metric it compares
        return float(f1_score(y_true, outputs.prediction, labels=classes, average="macro", zero_division=0))
    if kind is Kind.MULTICLASS and name == "accuracy":
        return float(np.mean(np.asarray(y_true) == outputs.prediction))
    if kind is Kind.REGRESSION and name in ("rmse", "mae"):
        error = np.asarray(y_true, float) - np.asarray(outputs.prediction, float)
        return float(np.sqrt(np.mean(error**2)) if name == "rmse" else np.mean(np.abs(error)))
    value = kind_metrics(kind, y_true, outputs, threshold, classes).get(name)
    return float("nan") if value is None else float(value)


def calibration_table(y_true: np.ndarray, score: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Return reliability bins (mean score vs observed rate, equal-width) and the expected calibration error."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        mean_score, observed = float(score[mask].mean()), float(y_true[mask].mean())
        ece += mask.mean() * abs(mean_score - observed)
        rows.append({"bin": b, "rows": int(mask.sum()), "mean_score": mean_score, "observed_rate": observed})
    return {"bins": rows, "expected_calibration_error": float(ece)}


def realised_performance(y_true: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Return ROC AUC, precision, recall, F1, log loss, accuracy and calibration of scores against labels."""
    metrics: dict[str, Any] = classification_metrics(y_true, score, threshold)
    metrics["accuracy"] = float(((score >= threshold).astype(int) == y_true).mean())
    metrics["calibration"] = calibration_table(y_true, score)
    return metrics


def metric_noise(
    kind: Kind,
    name: str,
    y_true: np.ndarray,
    outputs: Outputs,
    threshold: float,
    classes: list[str],
    rows: int,
    quantile: float,
    draws: int = 200,
    seed: int = 0,
) -> float | None:
    """How much worse a metric reads on a night of `rows` rows by chance alone: the `quantile` of its drop
    (core.kinds.Metric.drop) over random draws of that many held-out rows, against the whole held-out value.

    The retraining rules' allowed drops are raised to it, so a noisy metric (RMSE on heavy-tailed targets, any
    metric on small partitions) does not fire on noise. None when there are too few rows to tell.
    """
    spec = metric_spec(kind, name)
    size = min(rows, len(y_true))
    if size < 20 or len(y_true) < 40:
        return None
    whole = metric_value(kind, name, y_true, outputs, threshold, classes)
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(draws):
        index = rng.choice(len(y_true), size, replace=True)
        value = metric_value(kind, name, y_true[index], outputs.take(index), threshold, classes)
        if np.isfinite(value):
            drops.append(spec.drop(whole, value))
    return float(np.quantile(drops, quantile)) if drops else None


def realised_by_kind(
    kind: Kind, y_true: np.ndarray, outputs: Outputs, threshold: float, classes: list[str]
) -> dict[str, Any]:
    """Realised performance of a night: the kind's metrics, with calibration (binary) or per-class recall."""
    kind = Kind(kind)
    if kind is Kind.BINARY:
        return realised_performance(np.asarray(y_true, int), outputs.score, threshold)
    metrics: dict[str, Any] = kind_metrics(kind, y_true, outputs, threshold, classes)
    if kind is Kind.MULTICLASS:
        recall = recall_score(y_true, outputs.prediction, labels=classes, average=None, zero_division=0)
        metrics["per_class_recall"] = {c: float(r) for c, r in zip(classes, np.atleast_1d(recall))}
        metrics["class_shares"] = {c: float((y_true == c).mean()) for c in classes}
    return metrics


def fit_calibrator(validation_scores: np.ndarray, validation_labels: np.ndarray) -> IsotonicRegression:
    """Fit the score -> probability map on the model's own held-out data (the CBPE calibration step)."""
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(validation_scores, validation_labels)


def estimated_performance(score: np.ndarray, threshold: float, calibrator: IsotonicRegression) -> dict[str, float]:
    """Estimate ROC AUC and accuracy without labels from calibrated probabilities (NannyML's CBPE).

    With calibrated probability p_i that row i is positive, the expected confusion matrix at any cut-off
    counts p_i as a true positive and 1 - p_i as a false positive; the expected ROC curve and its area follow.
    """
    if len(score) == 0:
        return {"roc_auc": float("nan"), "accuracy": float("nan")}
    p = np.clip(calibrator.predict(score), 0.0, 1.0)
    predicted = score >= threshold
    accuracy = float(np.where(predicted, p, 1.0 - p).mean())
    order = np.argsort(-score, kind="stable")
    s, q = score[order], p[order]
    # group tied scores so the curve moves diagonally through them, as roc_auc_score does
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.r_[0.0, np.cumsum(q)[last_of_group]]
    fp = np.r_[0.0, np.cumsum(1.0 - q)[last_of_group]]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return {"roc_auc": float("nan"), "accuracy": accuracy}
    auc = float(np.trapezoid(tp / tp[-1], fp / fp[-1]))
    return {"roc_auc": auc, "accuracy": accuracy}


def _label_name(target: str) -> str:
    """The label column's name in a report: the config's target (not `target`), unless it is an output's name."""
    return target if target and target not in ("score", "prediction") else "target"


def performance_report(
    joined: pd.DataFrame, threshold: float, folder: Path, stem: str = "performance", target: str = "target"
) -> dict[str, str]:
    """Write Evidently's classification report of scores (`score`) against labels (`target`, shown under the
    config's target name); return its paths."""
    ev = evidently()
    label = _label_name(target)
    definition = ev.DataDefinition(
        classification=[ev.BinaryClassification(target=label, prediction_probas="score", pos_label=1)],
        numerical_columns=["score"],
    )
    frame = joined[["target", "score"]].astype({"target": "int64"}).rename(columns={"target": label})
    snapshot = ev.Report([evidently("presets").ClassificationPreset(probas_threshold=threshold)]).run(
        current_data=ev.Dataset.from_pandas(frame, data_definition=definition), reference_data=None
    )
    return save_snapshot(snapshot, folder, stem)


class Estimator:
    """What estimates a night's performance without labels, fitted on the model's held-out rows."""

    def __init__(self, kind: Kind, holdout: pd.DataFrame, features: list[str], classes: list[str]) -> None:
        self.kind, self.features, self.classes = Kind(kind), features, classes
        labels = holdout["label"].to_numpy()
        if self.kind is Kind.BINARY:
            self.calibrators = [fit_calibrator(holdout["score"].to_numpy(), labels.astype(int))]
        elif self.kind is Kind.MULTICLASS:
            proba = holdout[[f"proba_{i}" for i in range(len(classes))]].to_numpy()
            text = labels.astype(str)
            self.calibrators = [fit_calibrator(proba[:, k], (text == c).astype(int)) for k, c in enumerate(classes)]
        else:
            self.loss_models = _fit_loss_models(holdout, features)

    def estimate(self, outputs: Outputs, rows: pd.DataFrame | None, threshold: float) -> dict[str, float]:
        """The kind's estimated metrics (core.kinds.ESTIMATED); NaN where they cannot be estimated."""
        if self.kind is Kind.BINARY:
            return estimated_performance(outputs.score, threshold, self.calibrators[0])
        if self.kind is Kind.MULTICLASS:
            return _estimate_multiclass(outputs, self.calibrators)
        if rows is None or rows.empty:
            return {"mae": float("nan"), "rmse": float("nan")}
        inputs = _loss_inputs(rows, self.features)
        absolute, squared = (np.clip(m.predict(inputs), 0.0, None) for m in self.loss_models)
        return {"mae": float(absolute.mean()), "rmse": float(np.sqrt(squared.mean()))}


def _estimate_multiclass(outputs: Outputs, calibrators: list[IsotonicRegression]) -> dict[str, float]:
    """Multiclass CBPE: expected accuracy and macro-F1 from one-vs-rest calibrated class probabilities."""
    if len(outputs) == 0 or outputs.probabilities is None:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    return multiclass_estimate_from_sums(multiclass_sums(outputs.probabilities, calibrators))


def multiclass_sums(probabilities: np.ndarray, calibrators: list[IsotonicRegression]) -> np.ndarray:
    """The expected counts CBPE adds up over rows (so a night is estimated batch by batch, in bounded memory).

    Per class k: expected true positives, false positives and false negatives; then the expected correct rows and
    the row count.
    """
    calibrated = np.column_stack([np.clip(c.predict(probabilities[:, k]), 0, 1) for k, c in enumerate(calibrators)])
    calibrated = calibrated / np.clip(calibrated.sum(axis=1, keepdims=True), 1e-12, None)
    top = probabilities.argmax(axis=1)
    chosen = np.zeros_like(calibrated, dtype=bool)
    chosen[np.arange(len(top)), top] = True
    tp = (calibrated * chosen).sum(axis=0)
    fp = ((1 - calibrated) * chosen).sum(axis=0)
    fn = (calibrated * ~chosen).sum(axis=0)
    return np.concatenate([tp, fp, fn, [tp.sum(), len(top)]])


def multiclass_estimate_from_sums(sums: np.ndarray) -> dict[str, float]:
    classes = (len(sums) - 2) // 3
    tp, fp, fn = sums[:classes], sums[classes : 2 * classes], sums[2 * classes : 3 * classes]
    rows = sums[-1]
    if rows == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {"accuracy": float(sums[-2] / rows), "macro_f1": float(f1.mean())}


def _loss_inputs(rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    frame = rows[features].copy()
    for column in features:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].astype("category").cat.codes.where(frame[column].notna()).astype(float)
    return frame.assign(__prediction__=rows["score"].to_numpy(float))


def _fit_loss_models(holdout: pd.DataFrame, features: list[str]) -> list[Any]:
    """Direct loss estimation: two models of the error from the features and the prediction (absolute, squared)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    inputs = _loss_inputs(holdout, features)
    error = holdout["label"].to_numpy(float) - holdout["score"].to_numpy(float)
    return [
        HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(inputs, target)
        for target in (np.abs(error), error**2)
    ]


def performance_report_by_kind(
    kind: Kind, joined: pd.DataFrame, threshold: float, folder: Path, stem: str = "performance", target: str = "target"
) -> dict[str, str]:
    """Write Evidently's classification or regression report of predictions against labels (`target`, shown under
    the config's target name)."""
    kind = Kind(kind)
    if kind is Kind.BINARY:
        return performance_report(joined, threshold, folder, stem, target)
    ev = evidently()
    presets = evidently("presets")
    label = _label_name(target)
    if kind is Kind.MULTICLASS:
        frame = joined[["target", "prediction"]].astype(str).rename(columns={"target": label})
        definition = ev.DataDefinition(
            classification=[ev.MulticlassClassification(target=label, prediction_labels="prediction")],
            categorical_columns=[label, "prediction"],
        )
        preset = presets.ClassificationPreset()
    else:
        frame = joined[["target", "prediction"]].astype(float).rename(columns={"target": label})
        definition = ev.DataDefinition(
            regression=[ev.Regression(target=label, prediction="prediction")],
            numerical_columns=[label, "prediction"],
        )
        preset = presets.RegressionPreset()
    snapshot = ev.Report([preset]).run(
        current_data=ev.Dataset.from_pandas(frame, data_definition=definition), reference_data=None
    )
    return save_snapshot(snapshot, folder, stem)
