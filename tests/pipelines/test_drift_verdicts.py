"""Drift verdicts without Evidently: which test and threshold each column gets, the statistics, calibration's direction."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.core.config import load_config
from pipelines.steps.drift import SCORE, _parse_drift, calibrate_thresholds, column_tests, drift_statistic
from tests.conftest import write_config


@pytest.fixture
def two_columns(tmp_path):
    return load_config(
        write_config(
            tmp_path,
            features={"numeric": ["x"], "categorical": ["c"]},
            monitoring={"drift": {"per_column": {"x": {"method": "ks", "threshold": 0.01}}}},
        )
    )


def test_a_calibrated_threshold_replaces_the_configured_one_only_for_the_same_method(two_columns):
    tests = column_tests(two_columns)
    assert tests == {"x": ("ks", 0.01), "c": ("jensenshannon", 0.1), SCORE: ("wasserstein", 0.1)}
    calibrated = {
        "x": {"method": "ks", "threshold": 0.001},
        "c": {"method": "psi", "threshold": 0.5},
        SCORE: {"method": "wasserstein", "threshold": 0.2},
        "gone": {"method": "ks", "threshold": 0.5},
    }
    assert column_tests(two_columns, calibrated) == {
        "x": ("ks", 0.001),
        "c": ("jensenshannon", 0.1),
        SCORE: ("wasserstein", 0.2),
    }


def test_statistics_by_their_definitions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 2, 4000), rng.normal(1, 2, 4000)
    assert drift_statistic("wasserstein", a, b, True) == pytest.approx(stats.wasserstein_distance(a, b) / np.std(a))
    assert drift_statistic("wasserstein", a, b + 0, True) == pytest.approx(0.5, abs=0.05)  # a 1-unit shift, sd 2
    assert drift_statistic("ks", a, b, True) == pytest.approx(stats.ks_2samp(a, b).pvalue)
    assert drift_statistic("ks", a, a.copy(), True) == pytest.approx(1.0)
    cats_ref, cats_cur = np.array(["a"] * 60 + ["b"] * 40), np.array(["a"] * 40 + ["b"] * 60)
    expected_js = float(
        np.sqrt(0.5 * sum(p * np.log(p / 0.5) for p in (0.6, 0.4)) + 0.5 * sum(p * np.log(p / 0.5) for p in (0.4, 0.6)))
    )
    assert drift_statistic("jensenshannon", cats_ref, cats_cur, False) == pytest.approx(expected_js)
    assert drift_statistic("psi", cats_ref, cats_cur, False) == pytest.approx((0.6 - 0.4) * np.log(0.6 / 0.4) * 2)
    assert drift_statistic("chisquare", cats_ref, cats_cur, False) == pytest.approx(
        stats.chisquare([40, 60], [60, 40]).pvalue
    )
    assert drift_statistic("psi", cats_ref, cats_ref.copy(), False) == 0.0
    with pytest.raises(ValueError, match="unknown drift method"):
        drift_statistic("kl", a, b, True)


def test_calibration_raises_distances_and_lowers_p_values_above_their_noise(two_columns):
    rng = np.random.default_rng(1)
    reference = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 6000),
            "c": rng.choice(["a", "b", "c"], 6000, p=[0.7, 0.2, 0.1]),
            SCORE: rng.beta(2, 5, 6000),
        }
    )
    small = calibrate_thresholds(two_columns, reference, rows_per_partition=60, seed=0)
    assert small["x"]["method"] == "ks" and small["x"]["threshold"] <= 0.01  # p-values: never above configured
    assert small[SCORE]["threshold"] > 0.1 and small[SCORE]["threshold"] == small[SCORE]["no_drift_quantile"]
    assert small["c"]["calibrated"] and small["c"]["chunk_rows"] == 60
    large = calibrate_thresholds(two_columns, reference, rows_per_partition=3000, seed=0)
    assert large[SCORE]["threshold"] == 0.1  # big partitions keep the configured sensitivity
    tiny = calibrate_thresholds(two_columns, reference.head(18), rows_per_partition=500, seed=0)
    assert not tiny["x"]["calibrated"] and tiny["x"]["threshold"] == 0.01  # fewer than 10 rows a chunk: as configured


class _Snapshot:
    def __init__(self, data):
        self.data = data

    def dict(self):
        return self.data


def test_verdicts_are_read_per_column_and_only_features_count_as_drifted():
    value = "evidently:metric_v2:ValueDrift"
    snapshot = _Snapshot(
        {
            "metrics": [
                {"config": {"type": value, "column": c}, "value": v}
                for c, v in (("x", 0.001), ("c", 0.05), (SCORE, 0.3))
            ],
            "tests": [
                {"metric_config": {"params": {"type": value, "column": c}}, "status": s}
                for c, s in (("x", "FAIL"), ("c", "SUCCESS"), (SCORE, "FAIL"))
            ],
        }
    )
    tests = {"x": ("ks", 0.01), "c": ("jensenshannon", 0.1), SCORE: ("wasserstein", 0.1), "absent": ("ks", 0.05)}
    columns, drifted = _parse_drift(snapshot, tests, ["x", "c"])
    assert drifted == ["x"] and set(columns) == {"x", "c", SCORE}
    assert columns["x"] == {"method": "ks", "threshold": 0.01, "statistic": 0.001, "kind": "p_value", "drifted": True}
    assert columns["c"]["kind"] == "distance" and not columns["c"]["drifted"]
    assert columns[SCORE]["drifted"]  # the score drifted, but it is not a feature


class _Snapshot:
    """An Evidently snapshot as `_parse_drift` reads it (`.dict()`), built by hand."""

    def __init__(self, data):
        self.data = data

    def dict(self):
        return self.data


def _value(column, value):
    return {"config": {"type": "evidently:metric_v2:ValueDrift", "column": column}, "value": value}


def _test(column, status):
    return {"metric_config": {"params": {"type": "evidently:metric_v2:ValueDrift", "column": column}}, "status": status}


def test_drift_verdicts_are_read_per_column_and_other_entries_are_ignored():
    snapshot = _Snapshot(
        {
            "metrics": [
                {"value": 3},  # a metric of another kind, without a config
                {"config": {"type": "evidently:metric_v2:RowCount"}, "value": 100},
                _value("b", 0.2),
                _value("c", 0.001),
                _value("score", 0.3),
            ],
            "tests": [
                {"status": "FAIL"},  # a test without a metric config
                {"metric_config": {}, "status": "FAIL"},  # nor params
                _test("c", "FAIL"),
                _test("score", "FAIL"),
                _test("b", "SUCCESS"),
            ],
        }
    )
    tests = {"a": ("psi", 0.1), "b": ("psi", 0.1), "c": ("ks", 0.05), "d": ("psi", 0.1), "score": ("psi", 0.1)}
    columns, drifted = _parse_drift(snapshot, tests, ["a", "b", "c", "d"])
    assert set(columns) == {"b", "c", "score"}  # "a" has no value: skipped, and the columns after it still read
    assert columns["c"] == {"method": "ks", "threshold": 0.05, "statistic": 0.001, "kind": "p_value", "drifted": True}
    assert columns["b"]["drifted"] is False and columns["b"]["kind"] == "distance"
    assert columns["score"]["drifted"] is True
    assert drifted == ["c"]  # the score drifts on its own verdict, not as a feature


def test_a_column_with_a_statistic_but_no_verdict_has_not_drifted():
    columns, drifted = _parse_drift(_Snapshot({"metrics": [_value("b", 0.9)]}), {"b": ("psi", 0.1)}, ["b"])
    assert columns["b"]["drifted"] is False and drifted == []
