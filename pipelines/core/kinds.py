"""Model kinds and their metrics: what each kind is judged by, and which way is better.

Pure data (no I/O, no scikit-learn): the config validates its metric names against it, and the steps compute,
compare and estimate the metrics it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def classifies(self) -> bool:
        return self is not Kind.REGRESSION


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    bounded: bool  # in [0, 1]: drops are absolute; otherwise relative to the champion's held-out value

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better `candidate` is than `champion` (positive: better), whichever way the metric points."""
        return candidate - champion if self.higher_is_better else champion - candidate

    def drop(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference`: absolute for bounded metrics, else a fraction of it."""
        worse = reference - value if self.higher_is_better else value - reference
        if self.bounded:
            return worse
        return worse / abs(reference) if reference else (float("inf") if worse > 0 else 0.0)

    def misses(self, value: float, floor: float) -> bool:
        """Whether `value` is on the wrong side of a floor (a ceiling for lower-is-better metrics)."""
        return value < floor if self.higher_is_better else value > floor

    def bound_word(self) -> str:
        return "floor" if self.higher_is_better else "ceiling"


METRICS: dict[Kind, dict[str, Metric]] = {
    Kind.BINARY: {
        m.name: m
        for m in (
            Metric("roc_auc", True, True),
            Metric("precision", True, True),
            Metric("recall", True, True),
            Metric("f1", True, True),
            Metric("accuracy", True, True),
            Metric("log_loss", False, False),
        )
    },
    Kind.MULTICLASS: {
        m.name: m
        for m in (Metric("macro_f1", True, True), Metric("accuracy", True, True), Metric("log_loss", False, False))
    },
    Kind.REGRESSION: {
        m.name: m
        for m in (
            Metric("rmse", False, False),
            Metric("mae", False, False),
            Metric("r2", True, False),
            Metric("mape", False, False),
        )
    },
}
# the default metric of the retraining rules and the gate, and the default promotion floors and realised floor
PRIMARY: dict[Kind, str] = {Kind.BINARY: "roc_auc", Kind.MULTICLASS: "macro_f1", Kind.REGRESSION: "rmse"}
DEFAULT_FLOORS: dict[Kind, dict[str, float]] = {
    Kind.BINARY: {"roc_auc": 0.65},
    Kind.MULTICLASS: {},
    Kind.REGRESSION: {},
}
DEFAULT_REALISED_FLOOR: dict[Kind, float | None] = {Kind.BINARY: 0.65, Kind.MULTICLASS: None, Kind.REGRESSION: None}
# the metrics estimated before labels arrive (CBPE for the classifiers, direct loss estimation for regression)
ESTIMATED: dict[Kind, tuple[str, ...]] = {
    Kind.BINARY: ("roc_auc", "accuracy"),
    Kind.MULTICLASS: ("accuracy", "macro_f1"),
    Kind.REGRESSION: ("mae", "rmse"),
}


def metric(kind: Kind | str, name: str) -> Metric:
    """The named metric of a kind; KeyError naming the kind's metrics when it has no such metric."""
    table = METRICS[Kind(kind)]
    if name not in table:
        raise KeyError(f"{name!r} is not a {Kind(kind)} metric (choose one of {sorted(table)})")
    return table[name]
