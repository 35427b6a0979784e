"""Segments: the monitoring split by the values of chosen feature columns (`monitoring.segments`).

A segment is `column=value`. Each column keeps its `segment_values` largest values (taken from the champion's
reference, so a night's segments are the reference's), and the rest of its rows form `column=(other)`: at most
(segment_values + 1) segments per column, whatever the data holds. Per segment a night gets its row share against
the reference's, the score's drift (Wasserstein distance over the reference segment's spread), the estimated metric
and, once labels arrive, the realised metric with a bootstrap interval; the segments whose metric fell furthest
below their reference (the champion's held-out rows of the segment, else its overall held-out metric) are ranked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import CI_LEVEL
from pipelines.core.kinds import Kind, metric
from pipelines.steps.performance import Estimator, metric_value
from pipelines.steps.predictions import Outputs

OTHER, MISSING = "(other)", "(missing)"
RANKED = 5  # segments in a night's worst list
INTERVAL_SAMPLES = 200  # bootstrap resamples of a segment's metric


def as_text(values: pd.Series) -> pd.Series:
    """A column's values as segment names (missing values are a segment of their own)."""
    return values.astype("string").fillna(MISSING).astype(object)


def largest_values(values: pd.Series, keep: int) -> list[str]:
    """The `keep` values with the most rows (ties by name, so the choice is the same on every read)."""
    counts = as_text(values).value_counts()
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    return [str(value) for value, _ in ordered[:keep]]


def kept_values(config: PipelineConfig, reference: pd.DataFrame) -> dict[str, list[str]]:
    """Each segment column's kept values, from the reference (the champion's sample or the gate's rows)."""
    keep = config.monitoring.segment_values
    return {c: largest_values(reference[c], keep) for c in config.monitoring.segments if c in reference}


def split(frame: pd.DataFrame, kept: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Row positions of each segment (`column=value`) of `frame`; values not kept go to `column=(other)`."""
    segments: dict[str, np.ndarray] = {}
    for column, values in kept.items():
        if column not in frame:
            continue
        text = as_text(frame[column]).to_numpy()
        labels = np.where(np.isin(text, np.array(values, dtype=object)), text, OTHER)
        for value in [*values, OTHER]:
            rows = np.flatnonzero(labels == value)
            if len(rows):
                segments[f"{column}={value}"] = rows
    return segments


def metric_interval(
    kind: Kind,
    name: str,
    y: np.ndarray,
    outputs: Outputs,
    threshold: float,
    classes: list[str],
    samples: int = INTERVAL_SAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A metric and its bootstrap percentile interval (CI_LEVEL); NaN where it is not defined on these rows."""

    def value(rows: np.ndarray | slice) -> float:
        if Kind(kind).classifies and len(np.unique(y[rows])) < 2:
            return float("nan")  # not defined on one class (and no warning per resample)
        try:
            return metric_value(kind, name, y[rows], outputs.take(np.arange(len(y))[rows]), threshold, classes)
        except ValueError:  # one class only, for example
            return float("nan")

    point = value(slice(None))
    rng = np.random.default_rng(seed)
    draws = [value(rng.integers(0, len(y), len(y))) for _ in range(samples)] if len(y) else []
    finite = [d for d in draws if np.isfinite(d)]
    if not np.isfinite(point) or len(finite) < samples // 2:
        return point, float("nan"), float("nan")
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return point, float(low), float(high)


def references(
    config: PipelineConfig, holdout: pd.DataFrame, kept: dict[str, list[str]], classes: list[str], overall: float | None
) -> dict[str, float | None]:
    """Each segment's reference metric: the champion on its held-out rows of the segment, else its overall one.

    A model registered before segments were configured has no segment column in its held-out rows: every segment
    is then compared with the overall held-out metric.
    """
    kind, name = config.model.kind, config.retraining.metric
    out: dict[str, float | None] = {}
    if holdout.empty or "label" not in holdout:
        return out
    y = holdout["label"].to_numpy()
    probabilities = (
        holdout[[f"proba_{i}" for i in range(len(classes))]].to_numpy(float) if kind is Kind.MULTICLASS else None
    )
    outputs = _outputs(kind, holdout["score"].to_numpy(float), config.model.decision_threshold, probabilities, classes)
    for segment, rows in split(holdout, kept).items():
        if len(rows) < config.monitoring.min_segment_rows:
            continue
        try:
            out[segment] = metric_value(
                kind, name, y[rows], outputs.take(rows), config.model.decision_threshold, classes
            )
        except ValueError:
            out[segment] = None
    for column, values in kept.items():
        for value in [*values, OTHER]:
            out.setdefault(f"{column}={value}", overall)
    return out


def _outputs(
    kind: Kind, score: np.ndarray, threshold: float, probabilities: np.ndarray | None, classes: list[str]
) -> Outputs:
    if kind is Kind.BINARY:
        return Outputs(score, (score >= threshold).astype(int))
    if kind is Kind.MULTICLASS and probabilities is not None:
        return Outputs(score, np.array(classes, dtype=object)[probabilities.argmax(axis=1)], probabilities)
    return Outputs(score, score)


def realised_segments(
    config: PipelineConfig,
    frame: pd.DataFrame,
    y: np.ndarray,
    outputs: Outputs,
    kept: dict[str, list[str]],
    reference: dict[str, float | None],
    classes: list[str],
) -> dict[str, dict[str, Any]]:
    """Per segment of a labelled night: rows, the realised metric with its interval, its reference and the drop."""
    kind, name, threshold = config.model.kind, config.retraining.metric, config.model.decision_threshold
    spec = metric(kind, name)
    out = {}
    for segment, rows in split(frame, kept).items():
        value, low, high = metric_interval(kind, name, y[rows], outputs.take(rows), threshold, classes)
        base = reference.get(segment)
        out[segment] = {
            "rows": int(len(rows)),
            "value": _finite(value),
            "low": _finite(low),
            "high": _finite(high),
            "reference": base,
            "drop": _finite(spec.drop(base, value)) if base is not None and np.isfinite(value) else None,
        }
    return out


def estimated_segments(
    config: PipelineConfig,
    sample: pd.DataFrame,
    reference: pd.DataFrame,
    estimator: Estimator | None,
    kept: dict[str, list[str]],
    baseline: dict[str, float | None],
) -> dict[str, dict[str, Any]]:
    """Per segment of a night's sample: its row share and the reference's, the score's drift, the estimated metric.

    The estimate is CBPE (binary) or direct loss estimation (regression) on the segment's rows; multiclass
    estimates need every class's probability, which the sample does not hold, so they are left out.
    """
    kind, name = config.model.kind, config.retraining.metric
    spec = metric(kind, name)
    ours, theirs = split(sample, kept), split(reference, kept)
    scores = sample["score"].to_numpy(float)
    base_scores = reference["score"].to_numpy(float) if "score" in reference else np.array([])
    out = {}
    for segment, rows in ours.items():
        score = scores[rows]
        base_rows = theirs.get(segment, np.array([], dtype=int))
        base_score = base_scores[base_rows] if len(base_scores) else np.array([])
        drift = None
        if len(base_score) > 1 and np.std(base_score) > 0 and len(score):
            drift = float(wasserstein_distance(score, base_score) / np.std(base_score))
        estimate = None
        if estimator is not None and kind is not Kind.MULTICLASS and len(rows) >= 2:
            rows_frame = sample.iloc[rows] if kind is Kind.REGRESSION else None
            estimate = _finite(
                estimator.estimate(Outputs(score, score), rows_frame, config.model.decision_threshold).get(
                    name, float("nan")
                )
            )
        base = baseline.get(segment)
        out[segment] = {
            "rows": int(len(rows)),
            "share": len(rows) / max(len(sample), 1),
            "reference_share": len(base_rows) / max(len(reference), 1),
            "score_drift": drift,
            "estimated": estimate,
            "reference": base,
            "drop": _finite(spec.drop(base, estimate)) if base is not None and estimate is not None else None,
        }
    return out


def worst(config: PipelineConfig, segments: dict[str, dict[str, Any]], top: int = RANKED) -> list[dict[str, Any]]:
    """The segments that fell furthest below their reference (large enough to rank), worst first."""
    ranked = [
        {"segment": name, **facts}
        for name, facts in segments.items()
        if facts.get("drop") is not None and facts["rows"] >= config.monitoring.min_segment_rows
    ]
    return sorted(ranked, key=lambda f: -f["drop"])[:top]


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
