"""Labels of every kind, whatever they hold: read_labels never raises, keeps only usable labels, reports the rest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.core.config import load_config
from pipelines.steps.labels import read_labels
from pipelines.storage.partitions import partition_dir
from tests.conftest import write_config

DS = "2026-09-20"
CLASSES = ["high", "low", "medium"]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-(10**6), 10**6), st.none())
TEXT = st.one_of(st.sampled_from([*CLASSES, "catastrophic", "", "1", "</script>"]), st.none())


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    return {
        kind: load_config(write_config(folder, f"{kind}.yaml", kind=kind))
        for kind in ("binary", "multiclass", "regression")
    }


def _write(config, ids, values, arrow_type):
    folder = partition_dir(config.data_root, "labels", DS)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({config.id_column: pa.array(ids, pa.int64()), config.target: pa.array(values, arrow_type)})
    pq.write_table(table, folder / "part-0.parquet")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_labels_of_any_values_are_kept_only_when_usable(configs, data):
    kind = data.draw(st.sampled_from(sorted(configs)))
    config = configs[kind]
    numeric = data.draw(st.booleans())
    values = data.draw(st.lists(NUMBERS if numeric else TEXT, min_size=1, max_size=40))
    if numeric:
        values = [None if v is None else float(v) for v in values]
    ids = data.draw(st.lists(st.integers(0, 30), min_size=len(values), max_size=len(values)))
    _write(config, ids, values, pa.float64() if numeric else pa.string())
    labels = read_labels(config, DS, CLASSES if kind == "multiclass" else None)
    kept = labels.labels
    assert labels.rows_read == len(values)
    assert kept["key"].is_unique  # one label per id: conflicting ids are left out, repeats counted once
    if kind == "binary":
        assert kept["target"].isin([0, 1]).all()
    elif kind == "regression":
        assert np.isfinite(kept["target"].to_numpy(dtype=float)).all()
    else:
        assert kept["target"].notna().all()
        unseen = ~kept["target"].isin(CLASSES)
        assert not unseen.any() or any("never saw" in issue for issue in labels.issues)
    usable = pd.Series(values)
    if kind == "regression":
        bad = sum(1 for v in values if v is None or (isinstance(v, float) and not math.isfinite(v)))
        if numeric and bad:
            assert any("not a finite number" in issue for issue in labels.issues)
    assert len(kept) <= usable.notna().sum()
