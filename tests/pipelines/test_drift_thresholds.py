"""How calibrate_thresholds sets each column's alarm threshold: the rules, on small data (fast; the statistics' own
false-alarm and detection rates are measured in test_drift_calibration.py)."""

import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_config
from pipelines.steps.drift import SCORE, calibrate_thresholds
from tests.conftest import write_config


def _config(tmp_path, **drift):
    drift = {"calibration_draws": 60, **drift}
    return load_config(
        write_config(
            tmp_path,
            features={"numeric": ["x", "sparse"], "categorical": ["level"]},
            monitoring={"sample_rows": 1000, "drift": drift},
        )
    )


def _reference(rows=2_000, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(0, 1, rows),
            "sparse": np.nan,
            "level": rng.choice(["a", "b", "c"], rows, p=[0.6, 0.3, 0.1]),
            SCORE: rng.beta(2, 8, rows),
        }
    )
    frame.loc[: rows // 10, "x"] = np.nan  # nulls are left out, as Evidently leaves them out
    frame.loc[::400, "sparse"] = 1.0  # 5 values in 2,000 rows: most chunks of 100 hold none
    return frame


def test_a_small_partition_gets_its_noise_quantile_as_threshold(tmp_path):
    config = _config(tmp_path, numeric_threshold=0.001, categorical_threshold=0.001)
    found = calibrate_thresholds(config, _reference(), rows_per_partition=100)
    x = found["x"]
    assert x["calibrated"] and x["method"] == "wasserstein" and x["configured"] == 0.001
    assert x["chunk_rows"] == 100 and x["draws"] == 60 and x["quantile"] == 0.995
    assert x["threshold"] == x["no_drift_quantile"] > x["no_drift_median"] > 0.001  # raised to its noise: finite
    assert np.isfinite(found["level"]["threshold"]) and found["level"]["threshold"] > 0.001


def test_a_large_configured_distance_is_kept_and_calibration_stops_early(tmp_path):
    config = _config(tmp_path, numeric_threshold=5.0)
    x = calibrate_thresholds(config, _reference(), rows_per_partition=100)["x"]
    assert x["threshold"] == 5.0 and x["calibrated"] and x["no_drift_quantile"] < 5.0
    assert x["draws"] == 50  # every statistic far below the threshold after 50 draws: the rest cannot reach it


@pytest.mark.parametrize("configured", [1e-12, 5.0])
def test_a_p_value_threshold_takes_the_low_quantile_when_it_is_stricter(tmp_path, configured):
    config = _config(tmp_path, numeric_method="ks", numeric_threshold=configured)
    x = calibrate_thresholds(config, _reference(), rows_per_partition=100)["x"]
    assert x["draws"] == 60  # p-values never stop early
    assert x["no_drift_quantile"] < x["no_drift_median"]  # the low tail: a p-value alarms below its threshold
    assert x["threshold"] == min(configured, x["no_drift_quantile"])
    assert x["threshold"] == (1e-12 if configured == 1e-12 else x["no_drift_quantile"])


def test_draws_without_values_are_skipped_and_a_column_without_any_keeps_its_configuration(tmp_path):
    config = _config(tmp_path)
    reference = _reference()
    found = calibrate_thresholds(config, reference, rows_per_partition=100)
    assert 0 < found["sparse"]["draws"] < 60 and np.isfinite(found["sparse"]["threshold"])
    reference["sparse"] = np.nan
    empty = calibrate_thresholds(config, reference, rows_per_partition=100)["sparse"]
    assert empty == {"method": "wasserstein", "threshold": 0.1, "configured": 0.1, "calibrated": False}


@pytest.mark.parametrize(
    ("rows_per_partition", "reference_rows", "chunk"),
    [(100, 2_000, 100), (5_000, 6_000, 1_000), (5_000, 1_500, 750)],  # the partition, sample_rows, half the reference
)
def test_the_chunk_is_a_typical_partition_capped_by_the_sample_and_half_the_reference(
    tmp_path, rows_per_partition, reference_rows, chunk
):
    found = calibrate_thresholds(_config(tmp_path), _reference(reference_rows), rows_per_partition)
    assert {v["chunk_rows"] for v in found.values()} == {chunk}


@pytest.mark.parametrize(
    ("rows_per_partition", "calibrate", "calibrated"), [(9, True, False), (10, True, True), (100, False, False)]
)
def test_calibration_is_off_when_asked_or_below_ten_rows(tmp_path, rows_per_partition, calibrate, calibrated):
    config = _config(tmp_path, calibrate=calibrate, numeric_threshold=0.2)
    found = calibrate_thresholds(config, _reference(), rows_per_partition)
    assert set(found) == {"x", "sparse", "level", SCORE}
    assert found["x"]["calibrated"] is calibrated
    if not calibrated:
        assert found["x"] == {"method": "wasserstein", "threshold": 0.2, "configured": 0.2, "calibrated": False}


def test_the_draws_are_seeded_and_the_log_names_the_raised_columns(tmp_path, caplog):
    config = _config(tmp_path, numeric_threshold=0.001, categorical_threshold=5.0, score_threshold=5.0)
    with caplog.at_level(logging.INFO, logger="pipelines.steps.drift"):
        first = calibrate_thresholds(config, _reference(), 100, seed=3)
    # this call's line only (the suite's logging set-up may record the later calls too)
    (message,) = [r.getMessage() for r in caplog.records if "thresholds calibrated" in r.getMessage()]
    assert first == calibrate_thresholds(config, _reference(), 100, seed=3)
    assert first["x"]["threshold"] != calibrate_thresholds(config, _reference(), 100, seed=4)["x"]["threshold"]
    assert "up to 60 chunks of 100 reference rows" in message
    assert "'x'" in message and "'level'" not in message and SCORE not in message


def test_calibration_runs_all_its_draws_while_the_threshold_is_within_reach(tmp_path):
    reference = _reference()
    noise = calibrate_thresholds(_config(tmp_path, numeric_threshold=1e-6), reference, 100)["x"]["no_drift_quantile"]
    near = _config(tmp_path, numeric_threshold=noise * 1.1)  # the largest statistics come within 30% of it
    x = calibrate_thresholds(near, reference, 100)["x"]
    assert x["draws"] == 60 and x["threshold"] == noise * 1.1


@pytest.mark.parametrize(
    ("reference_rows", "rows_per_partition", "sample_rows", "rest"),
    [(2_000, 100, 1_000, 1_900), (20_000, 100, 1_000, 5_000), (20_000, 2_000, 2_000, 10_000)],
)
def test_each_chunk_is_compared_with_up_to_five_chunks_or_5000_rows_of_the_rest(
    tmp_path, monkeypatch, reference_rows, rows_per_partition, sample_rows, rest
):
    from pipelines.steps import drift

    sizes = []
    measure = drift.drift_statistic
    monkeypatch.setattr(
        drift, "drift_statistic", lambda m, r, c, n: sizes.append((len(r), len(c))) or measure(m, r, c, n)
    )
    config = load_config(  # psi: a statistic measured column by column (wasserstein is measured a block at a time)
        write_config(
            tmp_path,
            features={"numeric": ["y"], "categorical": []},
            monitoring={"sample_rows": sample_rows, "drift": {"per_column": {"y": {"method": "psi", "threshold": 5}}}},
        )
    )
    reference = _reference(reference_rows)[[SCORE]].assign(y=lambda f: f[SCORE] * 2)  # no nulls: every draw is whole
    calibrate_thresholds(config, reference, rows_per_partition)
    assert set(sizes) == {(rest, min(rows_per_partition, sample_rows))}
