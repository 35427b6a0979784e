"""What a model says about rows, per kind: the score, the prediction and (multiclass) one probability per class.

- binary: `score` is the positive-class probability, `prediction` 0/1 at `model.decision_threshold`;
- multiclass: `prediction` is the most probable class (as text), `score` its probability, `probabilities` one
  column per class (the model's `classes_`, as text);
- regression: `prediction` and `score` are the predicted value.

Models are any fitted scikit-learn-compatible estimator (`predict`, and `predict_proba` for the classifiers) or an
MLflow pyfunc model whose `predict` returns the values (regression) or a matrix of class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.errors import PipelineError
from pipelines.core.kinds import Kind
from pipelines.steps.labels import id_key


@dataclass
class Outputs:
    score: np.ndarray  # float64
    prediction: np.ndarray  # int8 (binary), text (multiclass), float64 (regression)
    probabilities: np.ndarray | None = None  # rows x classes (multiclass)

    def __len__(self) -> int:
        return len(self.score)

    def take(self, index: np.ndarray) -> Outputs:
        return Outputs(
            self.score[index],
            self.prediction[index],
            None if self.probabilities is None else self.probabilities[index],
        )


def as_classes(values: pd.Series | np.ndarray) -> np.ndarray:
    """Class labels as the text they stand for (1, 1.0 and "1" are one class), so labels and models always meet."""
    return id_key(pd.Series(values)).to_numpy(dtype=object)


def model_classes(model: Any) -> list[str]:
    """The classes a fitted classifier predicts, as text, in the order of its probability columns."""
    classes = getattr(model, "classes_", None)
    if classes is None and hasattr(model, "steps"):
        classes = getattr(model.steps[-1][1], "classes_", None)
    if classes is None:
        return []
    return [str(c) for c in as_classes(np.asarray(classes))]


def _proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(frame), dtype=float)
    out = np.asarray(model.predict(frame), dtype=float)  # a pyfunc returning probabilities
    if out.ndim != 2:
        raise PipelineError(
            "the model has no predict_proba and its predict returns one value per row: a classification kind needs "
            "class probabilities (log it with the sklearn flavour, or make predict return one column per class)"
        )
    return out


def predict(
    model: Any, frame: pd.DataFrame, kind: Kind, threshold: float = 0.5, classes: list[str] | None = None
) -> Outputs:
    """Return the model's outputs for the rows of `frame` (its feature columns)."""
    kind = Kind(kind)
    if kind is Kind.REGRESSION:
        values = np.asarray(model.predict(frame), dtype=float).reshape(len(frame), -1)[:, 0]
        return Outputs(values, values)
    proba = _proba(model, frame)
    if kind is Kind.BINARY:
        if proba.ndim != 2 or proba.shape[1] != 2:
            raise PipelineError(
                f"a binary model must give two class probabilities per row, this one gives {proba.shape[1:]}: "
                "set model.kind to multiclass if it has more classes"
            )
        score = proba[:, 1]
        return Outputs(score, (score >= threshold).astype("int8"))
    names = classes or model_classes(model)
    if len(names) != proba.shape[1]:
        raise PipelineError(f"the model gives {proba.shape[1]} class probabilities but names {len(names)} classes")
    top = proba.argmax(axis=1)
    return Outputs(proba[np.arange(len(proba)), top], np.asarray(names, dtype=object)[top], proba)


def concat(parts: list[Outputs]) -> Outputs:
    """Join the outputs of consecutive chunks of rows."""
    if not parts:
        return Outputs(np.empty(0), np.empty(0))
    probabilities = [p.probabilities for p in parts]
    return Outputs(
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.prediction for p in parts]),
        None if any(p is None for p in probabilities) else np.concatenate(probabilities),  # type: ignore[arg-type]
    )
