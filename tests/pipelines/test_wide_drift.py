"""Drift at any width: every column's statistic in one vectorised pass equals Evidently's, and false alarms stay rare
across hundreds of columns while a real shift in a few of them is still found on its first night."""

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_config
from pipelines.steps.column_stats import wasserstein_columns, wasserstein_null_draws
from pipelines.steps.drift import (
    SCORE,
    calibrate_thresholds,
    column_statistics,
    drift_statistic,
    judge_columns,
    monitored_rows,
)
from tests.conftest import write_config


def _awkward(rows: int, seed: int) -> np.ndarray:
    """Columns of several shapes: normal, integer ties, 0/1, skewed with nulls, constant, and one without values."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.normal(3, 2, rows),
            rng.poisson(2, rows).astype(float),
            (rng.random(rows) < 0.2).astype(float),
            np.where(rng.random(rows) < 0.1, np.nan, rng.lognormal(0, 1, rows)),
            np.full(rows, 7.0),
            np.full(rows, np.nan),
        ]
    )


def test_the_vectorised_distance_is_evidently_s_statistic_on_every_column():
    reference, current = _awkward(4_000, 1), _awkward(700, 2)
    current[:, 0] += 0.7
    found = wasserstein_columns(reference, current)
    for j in range(5):
        a, b = reference[:, j], current[:, j]
        expected = drift_statistic("wasserstein", a[~np.isnan(a)], b[~np.isnan(b)], True)
        assert found[j] == pytest.approx(expected, rel=1e-9, abs=1e-12), j
    assert np.isnan(found[5])  # no values: no statistic, never a verdict


def test_a_calibration_draw_measures_the_same_statistic_as_a_night():
    values = _awkward(3_000, 3)
    rng = np.random.default_rng(0)
    splits = [(order[:400], order[400:2400]) for order in (rng.permutation(3_000) for _ in range(3))]
    draws = wasserstein_null_draws(values, splits)
    for draw, (head, tail) in enumerate(splits):
        for j in range(5):
            a, b = values[tail, j], values[head, j]
            expected = drift_statistic("wasserstein", a[~np.isnan(a)], b[~np.isnan(b)], True)
            assert draws[draw, j] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert np.isnan(draws[draw, 5])


def _wide(width: int, rows: int, seed: int, shifted: int = 0) -> pd.DataFrame:
    """`width` numeric features of mixed shapes and 4 categorical ones; the first `shifted` numeric ones moved by
    half a standard deviation."""
    rng = np.random.default_rng(seed)
    data = {}
    for j in range(width):
        shape = j % 4
        if shape == 0:
            column, sd = rng.normal(0, 1, rows), 1.0
        elif shape == 1:
            column, sd = rng.poisson(3, rows).astype(float), np.sqrt(3)
        elif shape == 2:
            column, sd = rng.gamma(2, 2, rows), np.sqrt(8)
        else:
            column, sd = rng.uniform(0, 1, rows), np.sqrt(1 / 12)
        if j < shifted:
            column = column + 0.5 * sd
        data[f"f{j}"] = column
    for j in range(4):
        data[f"c{j}"] = rng.choice(["a", "b", "c", "d", "e"], rows, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    data[SCORE] = rng.beta(2, 6, rows)
    return pd.DataFrame(data)


def _config(tmp_path, width):
    return load_config(
        write_config(
            tmp_path,
            features={"numeric": [f"f{j}" for j in range(width)], "categorical": [f"c{j}" for j in range(4)]},
        )
    )


def _flagged(config, thresholds, reference, night):
    columns, _ = column_statistics(config, night, reference, thresholds)
    judge_columns(columns, config.monitoring.drift.fdr)
    return {c for c, f in columns.items() if f["drifted"] and c in set(config.features.all)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("width", "rows", "nights"),
    [(15, 300, 60), (300, 300, 10), (1_000, 5_000, 3)],
)
def test_quiet_nights_flag_at_most_one_percent_of_the_columns_at_any_width(tmp_path, width, rows, nights):
    config = _config(tmp_path, width)
    reference = _wide(width, min(monitored_rows(config), 20_000), seed=1)
    thresholds = calibrate_thresholds(config, reference, rows)
    flagged = [len(_flagged(config, thresholds, reference, _wide(width, rows, 100 + n))) for n in range(nights)]
    share = sum(flagged) / (nights * len(config.features.all))
    print(f"{width} features, {rows} rows a night: {flagged} columns flagged on {nights} quiet nights ({share:.2%})")
    assert share <= 0.01
    # and the control is across columns: at most a night in ten with any flag at all (each column's own calibrated
    # 0.5% alone would flag one or two of 300 columns on most quiet nights)
    assert sum(1 for f in flagged if f) <= max(1, nights // 10)


@pytest.mark.slow
@pytest.mark.parametrize("width", [100, 1_000])
def test_a_half_sd_shift_in_five_percent_of_the_columns_is_found_on_its_first_night(tmp_path, width):
    config = _config(tmp_path, width)
    reference = _wide(width, min(monitored_rows(config), 20_000), seed=1)
    thresholds = calibrate_thresholds(config, reference, 5_000)
    shifted = {f"f{j}" for j in range(width // 20)}
    found = _flagged(config, thresholds, reference, _wide(width, 5_000, seed=7, shifted=width // 20))
    assert shifted <= found
    assert len(found - shifted) <= max(1, width // 100)


def test_a_wide_partition_is_sampled_a_block_of_columns_at_a_time_with_the_same_rows(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.steps import drift
    from pipelines.storage.schema import incoming_partition

    config = _config(tmp_path, 6)
    frame = _wide(6, 3_000, seed=4).drop(columns=SCORE)
    frame.insert(0, config.id_column, np.arange(len(frame)))
    frame[config.timestamp_column] = pd.Timestamp("2026-09-01 12:00")
    folder = config.data_root / "incoming" / "ds=2026-09-01"
    folder.mkdir(parents=True)
    for part, rows in enumerate((slice(0, 1_200), slice(1_200, 3_000))):  # two files
        pq.write_table(pa.Table.from_pandas(frame.iloc[rows], preserve_index=False), folder / f"part-{part}.parquet")
    partition = incoming_partition(config, "2026-09-01")
    whole = drift.sample_rows(partition, 900, seed=5, batch_rows=1024)
    monkeypatch.setattr(drift, "SAMPLE_COLUMN_BLOCK", 3)
    in_blocks = drift.sample_rows(partition, 900, seed=5, batch_rows=1024)
    pd.testing.assert_frame_equal(whole, in_blocks)
    from pipelines.storage import schema

    streamed = schema.read_table(partition, batch_rows=1024)
    monkeypatch.setattr(schema, "WIDE_COLUMNS", 2)  # a "wide" file: row groups read 2 columns at a time
    assert schema.read_table(partition, batch_rows=1024).equals(streamed)
    in_blocks = drift.sample_rows(partition, 900, seed=5, batch_rows=1024)
    pd.testing.assert_frame_equal(whole, in_blocks)
    assert 700 < len(whole) < 1_100 and list(whole.columns) == partition.schema.names
    expected = frame.set_index(config.id_column).loc[whole[config.id_column]]
    assert np.allclose(expected["f0"].to_numpy(), whole["f0"].to_numpy())  # each row whole: its own values
