"""The retraining rules and the gate's arithmetic for every kind: directions, ceilings, relative drops, chance."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_config
from pipelines.core.kinds import Kind, metric
from pipelines.steps.decision import decide
from pipelines.steps.performance import metric_noise
from pipelines.steps.predictions import Outputs
from tests.conftest import write_config


@pytest.fixture
def regression(tmp_path):
    return load_config(write_config(tmp_path, kind="regression", retraining={"realised_floor": 500.0}))


def _nights(realised=None, estimated=None):
    return pd.DataFrame(
        [
            {
                "ds": "2026-10-01",
                "model_version": "1",
                "validation_success": True,
                "drift_share": 0.0,
                "estimated_roc_auc": None,
                "estimated_metrics": {"rmse": estimated} if estimated is not None else None,
                "realised_metrics": {"rmse": realised} if realised is not None else None,
            }
        ]
    )


def _decide(config, frame, noise=None):
    return decide(config, frame, "2026-10-01", "1", {"rmse": 100.0}, date(2026, 9, 30), noise=noise)


def test_a_lower_is_better_metric_drops_when_it_rises_relative_to_the_champion(regression):
    assert not _decide(regression, _nights(realised=104.0)).retrain  # 4% worse: within 0.05
    fired = _decide(regression, _nights(realised=120.0))
    assert fired.retrain and "20.0% worse than the champion's held-out 100.000 (allowed 0.05)" in fired.reasons[0]
    assert not _decide(regression, _nights(realised=80.0)).retrain  # better, not worse
    estimated = _decide(regression, _nights(estimated=130.0))
    assert "estimated rmse 130.000 is 30.0% worse" in estimated.reasons[0]


def test_a_floor_of_a_lower_is_better_metric_is_a_ceiling(regression):
    assert any("above the ceiling 500" in r for r in _decide(regression, _nights(realised=600.0)).reasons)


def test_the_drop_one_night_shows_by_chance_raises_the_allowed_drop(regression):
    assert not _decide(regression, _nights(realised=120.0), noise={"rmse": 0.3}).retrain
    fired = _decide(regression, _nights(realised=140.0), noise={"rmse": 0.3})
    assert "allowed 0.3: what one night shows by chance, above the configured 0.05" in fired.reasons[0]


def test_chance_drops_shrink_as_nights_grow_and_are_wider_for_heavy_tails():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 20_000)
    light = y + rng.normal(0, 1, len(y))
    heavy = y + rng.standard_t(2, len(y))

    def noise(predicted, rows):
        return metric_noise(Kind.REGRESSION, "rmse", y, Outputs(predicted, predicted), 0.5, [], rows, 0.995)

    assert noise(light, 200) > noise(light, 5000) > 0
    assert noise(heavy, 2000) > noise(light, 2000)
    assert metric_noise(Kind.REGRESSION, "rmse", y[:10], Outputs(light[:10], light[:10]), 0.5, [], 10, 0.995) is None


def test_metric_directions_and_drops():
    rmse, auc, r2 = metric("regression", "rmse"), metric("binary", "roc_auc"), metric("regression", "r2")
    assert rmse.improvement(candidate=90, champion=100) == 10 and auc.improvement(0.8, 0.75) == pytest.approx(0.05)
    assert rmse.drop(100, 150) == pytest.approx(0.5) and auc.drop(0.8, 0.7) == pytest.approx(0.1)
    assert r2.drop(0.5, 0.25) == pytest.approx(0.5) and rmse.misses(120, 100) and not auc.misses(0.7, 0.65)
    with pytest.raises(KeyError, match="not a multiclass metric"):
        metric("multiclass", "roc_auc")


def test_each_metric_alone_equals_the_kinds_full_table():
    from pipelines.steps.performance import kind_metrics, metric_value

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    proba = rng.dirichlet([1, 1, 1], 300)
    outputs = Outputs(proba.max(axis=1), np.asarray(classes, dtype=object)[proba.argmax(axis=1)], proba)
    y = np.asarray(classes, dtype=object)[rng.integers(0, 3, 300)]
    table = kind_metrics(Kind.MULTICLASS, y, outputs, 0.5, classes)
    for name in ("macro_f1", "accuracy", "log_loss"):
        assert metric_value(Kind.MULTICLASS, name, y, outputs, 0.5, classes) == pytest.approx(table[name])
    truth = rng.normal(10, 3, 300)
    values = truth + rng.normal(0, 1, 300)
    table = kind_metrics(Kind.REGRESSION, truth, Outputs(values, values))
    for name in ("rmse", "mae", "r2", "mape"):
        assert metric_value(Kind.REGRESSION, name, truth, Outputs(values, values), 0.5, []) == pytest.approx(
            table[name]
        )


def test_a_drop_from_a_zero_reference_and_a_value_on_the_bound():
    rmse, auc = metric("regression", "rmse"), metric("binary", "roc_auc")
    assert rmse.drop(0.0, 1.0) == float("inf") and rmse.drop(0.0, 0.0) == 0.0
    assert not rmse.misses(100.0, 100.0) and not auc.misses(0.65, 0.65)  # on the ceiling or floor: not missed


class _Probabilities:
    """A pyfunc-like model: no predict_proba, predict returns what it is given."""

    def __init__(self, out):
        self.out = out

    def predict(self, frame):
        return self.out


def test_predictions_of_each_kind_and_their_chunks_keep_their_shape():
    from sklearn.linear_model import LogisticRegression

    from pipelines.core.errors import PipelineError
    from pipelines.steps.predictions import concat, predict

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    binary = LogisticRegression().fit(frame, (frame["x"] > 0).astype(int))
    out = predict(binary, frame, Kind.BINARY)
    assert out.prediction.dtype == np.int8 and (out.prediction == (out.score >= 0.5)).all()
    assert 0 < out.prediction.sum() < 200
    tiers = np.where(frame["x"] < -0.5, "low", np.where(frame["x"] < 0.5, "mid", "high"))
    multi = LogisticRegression().fit(frame, tiers)
    out = predict(multi, frame, Kind.MULTICLASS)
    part = out.take(np.arange(10))
    assert part.probabilities.shape == (10, 3) and list(part.prediction) == list(out.prediction[:10])
    joined = concat([out.take(np.arange(100)), out.take(np.arange(100, 200))])
    assert np.array_equal(joined.probabilities, out.probabilities) and list(joined.prediction) == list(out.prediction)
    pyfunc = predict(_Probabilities(np.tile([0.2, 0.8], (200, 1))), frame, Kind.BINARY)
    assert (pyfunc.score == 0.8).all() and (pyfunc.prediction == 1).all()
    with pytest.raises(PipelineError, match="class probabilities"):
        predict(_Probabilities(np.zeros(200)), frame, Kind.BINARY)
    with pytest.raises(PipelineError, match="set model.kind to multiclass"):
        predict(multi, frame, Kind.BINARY)
