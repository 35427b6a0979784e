"""Late labels: matched to scored ids by value, coverage = matched / scored, bad label files reported, never blocking."""

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.contracts import NightRecord
from pipelines.flows import evaluation
from pipelines.governance.registry import Registry
from pipelines.steps.labels import match_labels, read_labels
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir
from tests.conftest import score_with_champion

GOOD, BAD = "2026-09-05", "2026-09-06"


@pytest.fixture
def lake(champion_lake, tmp_path):
    """Two scored nights with labels, recorded in a private history (no reports needed for label evaluation)."""
    data = tmp_path / "data"
    for area in ("incoming", "labels"):
        shutil.copytree(champion_lake.data_root / area, data / area)
    config = champion_lake.model_copy(update={"data_root": data})
    ref = Registry.open(config).champion()
    for ds in (GOOD, BAD):
        summary = score_with_champion(config, ds, f"run-{ds}")
        history.record_night(
            config,
            NightRecord(
                ds=ds, model_name=ref.name, model_version=ref.version, rows=summary.rows, validation_success=True
            ),
        )
    return config


def _labels(config, ds) -> pd.DataFrame:
    return pd.read_parquet(partition_dir(config.data_root, "labels", ds))


def _replace_labels(config, ds, tables: dict[str, pa.Table | bytes]) -> None:
    folder = partition_dir(config.data_root, "labels", ds)
    shutil.rmtree(folder)
    folder.mkdir()
    for name, table in tables.items():
        if isinstance(table, bytes):
            (folder / name).write_bytes(table)
        else:
            pq.write_table(table, folder / name)


def _scores(config, ds):
    return pd.read_parquet(partition_dir(config.data_root, "predictions", ds), columns=["id", "score"])


def test_coverage_counts_matched_ids_not_label_rows(lake):
    labels = _labels(lake, GOOD)
    half = labels.iloc[: len(labels) // 2]
    strangers = half.assign(application_id=half["application_id"] + 10**9)  # ids that were never scored
    _replace_labels(lake, GOOD, {"a.parquet": pa.Table.from_pandas(pd.concat([half, strangers]), preserve_index=False)})
    matched = match_labels(_scores(lake, GOOD), read_labels(lake, GOOD))
    assert matched.coverage == pytest.approx(len(half) / len(labels))
    assert matched.unscored_label_ids == len(strangers)
    assert any("never scored" in issue for issue in matched.issues)


def test_labels_with_both_classes_are_left_out_and_reported(lake):
    labels = _labels(lake, GOOD)
    flipped = labels.assign(defaulted=1 - labels["defaulted"])
    _replace_labels(lake, GOOD, {"a.parquet": pa.Table.from_pandas(pd.concat([labels, flipped]), preserve_index=False)})
    matched = match_labels(_scores(lake, GOOD), read_labels(lake, GOOD))
    assert matched.coverage == 0 and matched.joined.empty
    assert any(f"{len(labels):,} id(s) are labelled with two different values" in issue for issue in matched.issues)
    assert GOOD not in {r.ds for r in evaluation.evaluate_labels(lake)}
    entry = history.night(lake, GOOD, *_version(lake))
    assert entry["realised_roc_auc"] is None and entry["label_coverage"] == 0
    assert "two different values" in " ".join(entry["realised_metrics"]["labels"]["issues"])


def test_repeated_labels_count_once(lake):
    labels = _labels(lake, GOOD)
    _replace_labels(lake, GOOD, {"a.parquet": pa.Table.from_pandas(pd.concat([labels, labels]), preserve_index=False)})
    matched = match_labels(_scores(lake, GOOD), read_labels(lake, GOOD))
    assert matched.coverage == pytest.approx(1.0) and len(matched.joined) == len(labels)
    assert any("repeat an id with the same value: counted once" in issue for issue in matched.issues)


def test_ids_of_another_type_still_match(lake):
    labels = _labels(lake, GOOD)
    as_text = labels.assign(application_id=labels["application_id"].astype(str))
    as_float = labels.assign(application_id=labels["application_id"].astype("float64"))
    for variant in (as_text, as_float):
        _replace_labels(lake, GOOD, {"a.parquet": pa.Table.from_pandas(variant, preserve_index=False)})
        matched = match_labels(_scores(lake, GOOD), read_labels(lake, GOOD))
        assert matched.coverage == pytest.approx(1.0), matched.issues


def test_files_whose_ids_differ_in_type_all_meet_their_scores(lake):
    labels = _labels(lake, GOOD)
    half = len(labels) // 2
    text = labels.iloc[:half].assign(application_id=labels["application_id"].iloc[:half].astype(str))
    floats = labels.iloc[half:].assign(application_id=labels["application_id"].iloc[half:].astype("float64"))
    tables = {"text.parquet": text, "float.parquet": floats}
    _replace_labels(lake, GOOD, {n: pa.Table.from_pandas(t, preserve_index=False) for n, t in tables.items()})
    read = read_labels(lake, GOOD)
    matched = match_labels(_scores(lake, GOOD), read)
    assert read.rows_read == len(labels)
    assert matched.coverage == pytest.approx(1.0) and matched.unscored_label_ids == 0, matched.issues


def _version(config):
    ref = Registry.open(config).champion()
    return ref.name, ref.version


def test_broken_label_files_are_reported_and_the_other_nights_go_on(lake):
    labels = _labels(lake, BAD)
    _replace_labels(
        lake,
        BAD,
        {
            "good.parquet": pa.Table.from_pandas(labels.iloc[:500], preserve_index=False),
            "no_target.parquet": pa.Table.from_pandas(labels[["application_id"]], preserve_index=False),
            "torn.parquet": b"PAR1 not really",
            "odd.parquet": pa.Table.from_pandas(
                labels.iloc[500:600].assign(defaulted=np.where(np.arange(100) % 2, 2, np.nan)), preserve_index=False
            ),
        },
    )
    done = {r.ds: r for r in evaluation.evaluate_labels(lake)}
    assert set(done) == {GOOD, BAD}  # a night with broken files still gets metrics from what is usable
    issues = " ".join(done[BAD].label_issues)
    assert "no_target.parquet has no column 'defaulted'" in issues
    assert "torn.parquet is not readable Parquet" in issues
    assert "100 label(s) are missing or not 0/1" in issues
    assert done[BAD].label_coverage == pytest.approx(500 / len(_scores(lake, BAD)))
    assert evaluation.evaluate_labels(lake) == []  # nothing changed: nothing re-read
