"""Model performance: classification metrics, realised metrics once labels arrive, CBPE estimates before they do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import f1_score, log_loss, precision_score, recall_score, roc_auc_score

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
    }


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


def performance_report(
    joined: pd.DataFrame, threshold: float, folder: Path, stem: str = "performance"
) -> dict[str, str]:
    """Write Evidently's classification report of scores (`score`) against labels (`target`); return its paths."""
    ev = evidently()
    definition = ev.DataDefinition(
        classification=[ev.BinaryClassification(target="target", prediction_probas="score", pos_label=1)],
        numerical_columns=["score"],
    )
    frame = joined[["target", "score"]].astype({"target": "int64"})
    snapshot = ev.Report([evidently("presets").ClassificationPreset(probas_threshold=threshold)]).run(
        current_data=ev.Dataset.from_pandas(frame, data_definition=definition), reference_data=None
    )
    return save_snapshot(snapshot, folder, stem)
