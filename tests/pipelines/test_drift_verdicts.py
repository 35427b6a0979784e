"""Drift verdicts without Evidently: which test and threshold each column gets, the statistics, calibration's direction."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.core.config import load_config
from pipelines.steps.column_stats import benjamini_hochberg, fit_null, noise_p_value
from pipelines.steps.drift import (
    SCORE,
    beyond_threshold,
    calibrate_thresholds,
    column_tests,
    drift_statistic,
    judge_columns,
    rank_columns,
)
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


def _found(statistic, threshold=0.1, kind="distance", p=None, output=False):
    method = "ks" if kind == "p_value" else "wasserstein"
    return {
        "method": method,
        "threshold": threshold,
        "statistic": statistic,
        "kind": kind,
        "p_noise": p,
        "output": output,
    }


def test_a_column_drifts_past_its_threshold_only_when_its_noise_survives_the_false_discovery_rate():
    columns = {
        "far": _found(0.5, p=1e-9),  # past the threshold, far outside the noise
        "noisy": _found(0.15, p=0.009),  # past the threshold, but one of 5 columns: q = 0.009 x 5 / 4 > 0.01
        "calm": _found(0.05, p=1e-12),  # outside the noise, but a shift smaller than the threshold
        "quiet": _found(0.01, p=0.6),
        "old": _found(0.2, p=None),  # a model calibrated before noise p-values: its threshold alone
        "pval": _found(0.001, threshold=0.01, kind="p_value", p=0.001),  # p-value tests: the p-value is the noise
        SCORE: _found(0.3, p=0.005, output=True),  # an output is judged on its own, at the rate itself
    }
    judge_columns(columns, fdr=0.01)
    drifted = {c for c, f in columns.items() if f["drifted"]}
    assert drifted == {"far", "old", SCORE, "pval"}
    assert columns["far"]["q_value"] == pytest.approx(1e-9 * 5 / 2)  # rank 2 of 5 in the family (pval 1e-12 first)
    assert columns["noisy"]["q_value"] == pytest.approx(0.009 * 5 / 4)
    assert columns["old"]["q_value"] is None and columns[SCORE]["q_value"] == 0.005
    judge_columns(columns, fdr=0.05)  # a looser rate lets the noisy one through
    assert columns["noisy"]["drifted"]


def test_benjamini_hochberg_q_values_are_monotone_and_capped():
    q = benjamini_hochberg({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}, 0.05)
    assert q["a"] == pytest.approx(0.01 * 4)
    assert q["b"] == pytest.approx(0.04 * 4 / 3) and q["c"] == pytest.approx(0.04 * 4 / 3)  # step-up: min to the right
    assert q["d"] == pytest.approx(0.5)
    assert benjamini_hochberg({"x": 0.9, "y": 0.95}, 0.05) == {"x": pytest.approx(0.95), "y": pytest.approx(0.95)}
    assert benjamini_hochberg({}, 0.05) == {}


def test_beyond_threshold_by_direction_and_nan():
    assert beyond_threshold(_found(0.1)) and not beyond_threshold(_found(0.0999))
    assert beyond_threshold(_found(0.009, threshold=0.01, kind="p_value"))
    assert not beyond_threshold(_found(0.01, threshold=0.01, kind="p_value"))
    assert not beyond_threshold(_found(float("nan")))


def test_columns_are_ranked_drifted_first_then_by_noise_then_by_distance_to_threshold():
    columns = {
        "a": _found(0.2, p=0.2) | {"drifted": False},
        "b": _found(0.5, p=1e-6) | {"drifted": True},
        "c": _found(0.09, p=0.2) | {"drifted": False},
        "d": _found(0.3, p=None) | {"drifted": True},
        "e": _found(float("nan"), p=None) | {"drifted": False},
        "f": _found(0.02, p=0.01) | {"drifted": False},
    }
    assert rank_columns(columns) == ["b", "d", "f", "a", "c", "e"]


def test_a_fitted_noise_law_gives_small_p_values_far_out_and_none_without_draws():
    rng = np.random.default_rng(3)
    draws = np.abs(rng.normal(0, 0.02, 200))
    null = fit_null("wasserstein", draws)
    assert null["power"] == 2.0 and null["shape"] > 0
    assert noise_p_value("distance", 0.5, null) < 1e-12
    assert 0.2 < noise_p_value("distance", float(np.median(draws)), null) < 0.8
    assert noise_p_value("distance", 0.5, None) is None and noise_p_value("p_value", 0.03, None) == 0.03
    assert noise_p_value("distance", float("nan"), null) is None
    assert fit_null("ks", draws) is None and fit_null("psi", draws[:10]) is None and fit_null("psi", [0.0] * 30) is None
    assert fit_null("psi", draws)["power"] == 1.0
