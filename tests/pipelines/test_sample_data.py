from datetime import date

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from harness.sample_data import CHUNK_ROWS, DriftSpec, generate, generate_chunk
from pipelines.storage.partitions import list_partitions


def test_generation_is_deterministic(tmp_path):
    for folder in ("a", "b"):
        generate(tmp_path / folder, date(2026, 9, 1), 2, 1500, label_delay_days=1)
    for area in ("incoming", "labels"):
        left = pd.read_parquet(tmp_path / "a" / area)
        right = pd.read_parquet(tmp_path / "b" / area)
        pd.testing.assert_frame_equal(left, right)


def test_labels_arrive_after_the_delay(tmp_path):
    generate(tmp_path, date(2026, 9, 1), 6, 500, label_delay_days=2)
    assert len(list_partitions(tmp_path, "incoming")) == 6
    assert list_partitions(tmp_path, "labels") == [date(2026, 9, d) for d in (1, 2, 3, 4)]


def test_realistic_shape_signal_and_missing_values():
    frame = generate_chunk(date(2026, 9, 1), 0, 20_000, seed=7, drift=DriftSpec())
    numeric = frame.select_dtypes("number").drop(columns=["application_id", "defaulted"])
    assert numeric.shape[1] >= 8
    assert frame.select_dtypes("object").shape[1] >= 3
    assert 0.01 < frame["annual_income"].isna().mean() < 0.06
    assert 0.1 < frame["defaulted"].mean() < 0.3
    # late payments carry real signal
    assert frame.groupby(frame["late_payments_12m"] > 1)["defaulted"].mean().diff().iloc[-1] > 0.05
    assert frame["application_id"].is_unique


def test_drift_changes_inputs_and_the_target_relation():
    day = date(2026, 10, 1)
    stable = generate_chunk(day, 0, 20_000, 7, DriftSpec())
    covariate = generate_chunk(day, 0, 20_000, 7, DriftSpec(start=day, covariate=True))
    concept = generate_chunk(day, 0, 20_000, 7, DriftSpec(start=day, concept=True))
    assert covariate["credit_utilization"].mean() > stable["credit_utilization"].mean() + 0.05
    pd.testing.assert_frame_equal(stable.drop(columns="defaulted"), concept.drop(columns="defaulted"))
    south = concept["region"] == "SOUTH"
    assert concept.loc[south, "defaulted"].mean() > stable.loc[south, "defaulted"].mean() + 0.05
    before = generate_chunk(date(2026, 9, 30), 0, 1000, 7, DriftSpec(start=day, covariate=True, concept=True))
    np.testing.assert_array_equal(before["age"], generate_chunk(date(2026, 9, 30), 0, 1000, 7, DriftSpec())["age"])


def test_large_partitions_are_written_in_chunks_and_row_groups(tmp_path):
    rows = CHUNK_ROWS + 1234
    generate(tmp_path, date(2026, 9, 1), 1, rows, label_delay_days=0)
    meta = pq.ParquetFile(next((tmp_path / "incoming" / "ds=2026-09-01").glob("*.parquet"))).metadata
    assert meta.num_rows == rows
    assert meta.num_row_groups >= 3
    ids = pq.read_table(tmp_path / "incoming", columns=["application_id"]).column(0).to_numpy()
    assert len(np.unique(ids)) == rows
