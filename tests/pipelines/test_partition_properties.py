"""Property-based: whatever a partition holds, it is scored correctly or quarantined with a reason, never half done.

Generated partitions vary the schema (missing, extra, renamed and re-typed columns, mixed types across files,
dictionary-encoded text, dictionaries far larger than the rows), the values (nulls, NaN, infinities, huge numbers,
duplicate, null and overlong ids, unseen categories, huge, non-UTF-8, HTML and script strings, a column of long
values) and the files (empty, zero-byte, not Parquet, a footer that lies about its rows, a folder named like a
file, several per partition). Label files whose ids differ in type across files meet their scores. Invariant: validation passes and every row gets exactly one finite score, or the partition is
quarantined with a reason that names a column or a file; nothing else is raised and no partial file is left.

CI runs the `ci` profile (250 cases); `HYPOTHESIS_PROFILE=thorough` runs 3,000.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.sample_data import claim_rows
from pipelines.core.errors import PartitionQuarantinedError
from pipelines.governance.registry import Registry
from pipelines.steps.labels import id_key
from pipelines.steps.validation import validate_against_profile
from pipelines.storage.partitions import partition_dir
from tests.conftest import score_with_champion

settings.register_profile(
    "ci",
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
DS = "2026-09-20"
SCRIPT = "</script><img src=x onerror=alert(document.cookie)><b>&amp;"
FILE_DEFECTS = ["none"] * 12 + [
    "drop",
    "rename",
    "retype_text",
    "retype_int32",
    "retype_bool",
    "dictionary",
    "extra",
    "empty",
    "not_parquet",
    "zero_bytes",
    "binary_text",
    "huge_dictionary",
    "lying_footer",
    "folder",
]
VALUE_DEFECTS = [
    *["nan", "inf", "-inf", "huge", "null_id", "duplicate_id", "unseen", "script", "huge_text", "null_text"],
    *["long_values", "long_id"],
]


@pytest.fixture(scope="module")
def world(champion_lake, request):
    ref = Registry.open(champion_lake).champion()
    counts: Counter = Counter()
    config = champion_lake.model_copy(
        update={"validation": champion_lake.validation.model_copy(update={"min_rows": 1})}
    )
    yield {"config": config, "profile": Registry.open(champion_lake).load_profile(ref), "counts": counts}
    line = (
        f"partition properties ({PROFILE} profile): {sum(counts.values())} cases tried, "
        f"{counts['scored']} scored, {counts['quarantined']} quarantined"
    )
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}")


def _base_frame(config, profile, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {config.id_column: np.arange(rows, dtype="int64") + 1_000_000}
    for column, stats in profile["numeric"].items():
        frame[column] = rng.uniform(stats["min"], stats["max"], rows)
    for column, stats in profile["categorical"].items():
        frame[column] = rng.choice(stats["domain"], rows) if rows else np.array([], dtype=object)
    frame[config.timestamp_column] = pd.Timestamp("2026-09-20", tz="UTC") + pd.to_timedelta(np.arange(rows), "s")
    return pd.DataFrame(frame)


def _apply_values(frame: pd.DataFrame, config, defects: list[tuple[str, int, int]]) -> pd.DataFrame:
    frame = frame.copy()
    numeric, categorical = config.features.numeric, config.features.categorical
    for kind, col_pick, row_pick in defects:
        if frame.empty:
            return frame
        row = row_pick % len(frame)
        if kind in ("nan", "inf", "-inf", "huge"):
            column = numeric[col_pick % len(numeric)]
            frame.loc[frame.index[row], column] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e300}[kind]
        elif kind == "null_id":
            frame[config.id_column] = frame[config.id_column].astype(object)
            frame.loc[frame.index[row], config.id_column] = None
        elif kind == "duplicate_id":
            frame.loc[frame.index[row], config.id_column] = frame[config.id_column].iloc[0]
        elif kind == "long_id":
            ids = frame[config.id_column]
            frame[config.id_column] = [None if pd.isna(i) else f"{i}-" + "i" * 2000 for i in ids]
        elif kind == "long_values":  # every row of a categorical column: a distinct value of 50,000 characters
            column = categorical[col_pick % len(categorical)]
            frame[column] = [f"{i:06d}" + "v" * 50_000 for i in range(len(frame))]
        else:
            column = categorical[col_pick % len(categorical)]
            value = {"unseen": "never-seen-before", "script": SCRIPT, "huge_text": "x" * 100_000, "null_text": None}[
                kind
            ]
            frame[column] = frame[column].astype(object)
            frame.loc[frame.index[row], column] = value
    return frame


def _write(folder: Path, name: str, table: pa.Table, defect: str, column: str, config) -> None:
    path = folder / name
    if defect == "not_parquet":
        path.write_bytes(b"id,value\n1,2\n")
        return
    if defect == "zero_bytes":
        path.write_bytes(b"")
        return
    if defect == "folder":  # the data lands inside a folder that is named like a data file
        path.mkdir()
        pq.write_table(table, path / "inner.parquet")
        return
    if defect == "lying_footer":
        pq.write_table(table, path)
        path.write_bytes(claim_rows(path.read_bytes(), table.num_rows, 10**15))
        return
    index = table.schema.get_field_index(column)
    if defect == "drop":
        table = table.remove_column(index)
    elif defect == "rename":
        table = table.rename_columns([f"{n}_renamed" if n == column else n for n in table.column_names])
    elif defect == "retype_text":
        table = table.set_column(index, column, table[column].cast(pa.string()))
    elif defect == "retype_int32":
        values = pc_safe_int32(table[column])
        if values is not None:
            table = table.set_column(index, column, values)
    elif defect == "retype_bool":
        table = table.set_column(index, column, pa.array([i % 2 == 0 for i in range(table.num_rows)]))
    elif defect == "dictionary" and pa.types.is_string(table[column].type):
        table = table.set_column(index, column, table[column].combine_chunks().dictionary_encode())
    elif defect == "huge_dictionary" and column in config.features.categorical:
        used = table[column].combine_chunks().cast(pa.string())
        spare = pa.array([f"spare-{i}" for i in range(200_000)])
        dictionary = pa.concat_arrays([spare, used.fill_null("")])
        indices = pa.array([None if v is None else 200_000 + i for i, v in enumerate(used.to_pylist())], pa.int32())
        table = table.set_column(index, column, pa.DictionaryArray.from_arrays(indices, dictionary))
    elif defect == "extra":
        table = table.append_column("unexpected_extra", pa.array(["x"] * table.num_rows))
    elif defect == "empty":
        table = table.slice(0, 0)
    elif defect == "binary_text" and column in config.features.categorical:
        raw = [None if v is None else (b"\xff\xfe" + v.encode()) for v in table[column].to_pylist()]
        table = table.set_column(index, column, pa.array(raw, pa.binary()))
    pq.write_table(table, path)


def pc_safe_int32(values: pa.ChunkedArray) -> pa.ChunkedArray | None:
    try:
        return values.cast(pa.int32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


partitions = st.fixed_dictionaries(
    {
        "rows": st.integers(0, 300),
        "seed": st.integers(0, 2**16),
        "values": st.lists(
            st.tuples(st.sampled_from(VALUE_DEFECTS), st.integers(0, 20), st.integers(0, 300)), max_size=3
        ),
        "files": st.lists(st.tuples(st.sampled_from(FILE_DEFECTS), st.integers(0, 20)), min_size=1, max_size=3),
    }
)


@settings(settings.get_profile(PROFILE))
@given(case=partitions)
def test_every_partition_is_scored_or_quarantined_with_a_reason(world, case):
    config, profile = world["config"], world["profile"]
    columns = [config.id_column, *config.features.all, config.timestamp_column]
    root = Path(tempfile.mkdtemp(prefix="prop-"))
    try:
        lake = config.model_copy(update={"data_root": root})
        folder = partition_dir(root, "incoming", DS)
        folder.mkdir(parents=True)
        frame = _apply_values(_base_frame(config, profile, case["rows"], case["seed"]), config, case["values"])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        bounds = np.linspace(0, table.num_rows, len(case["files"]) + 1).astype(int)
        names = []
        for number, ((defect, col_pick), start, stop) in enumerate(zip(case["files"], bounds[:-1], bounds[1:])):
            name = f"part-{number}.parquet"
            _write(folder, name, table.slice(start, stop - start), defect, columns[col_pick % len(columns)], config)
            names.append(name)
        predictions = partition_dir(root, "predictions", DS)
        try:
            outcome = validate_against_profile(lake, DS, profile)
        except PartitionQuarantinedError as exc:
            world["counts"]["quarantined"] += 1
            record = json.loads((partition_dir(root, "quarantine", DS) / "validation.json").read_text())
            assert exc.failures and record["failures"] == exc.failures
            for failure in exc.failures:
                assert (
                    any(repr(c) in failure or f"({c})" in failure for c in columns)
                    or "file " in failure
                    or "holds a folder" in failure
                    or failure.startswith("row count")
                ), failure
            assert any(name in str(exc) for name in names) or "holds a value of" in str(exc), str(exc)
            assert not predictions.exists()
            return
        world["counts"]["scored"] += 1
        summary = score_with_champion(lake, DS, "property-run")
        out = pd.read_parquet(predictions / "predictions.parquet")
        assert len(out) == outcome.rows == summary.rows
        assert out["id"].is_unique and out["score"].notna().all() and np.isfinite(out["score"]).all()
        readable = [pd.read_parquet(folder / n, columns=[config.id_column]) for n in names]
        expected = pd.concat(readable)[config.id_column]
        assert sorted(id_key(out["id"])) == sorted(id_key(expected))
        assert sorted(p.name for p in predictions.iterdir()) == [".lock", "predictions.parquet"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_both_outcomes_were_exercised(world):
    """The generator is only useful if it produces scoreable partitions as well as broken ones."""
    counts = world["counts"]
    assert counts["scored"] >= 0.2 * sum(counts.values()) and counts["quarantined"] >= 0.2 * sum(counts.values()), (
        counts
    )


ID_TYPES = ["int64", "int32", "float64", "string"]


@settings(settings.get_profile(PROFILE))
@given(
    ids=st.lists(st.integers(0, 2**40), min_size=1, max_size=200, unique=True),
    files=st.lists(st.sampled_from(ID_TYPES), min_size=1, max_size=4),
)
def test_label_files_whose_ids_differ_in_type_all_meet_their_scores(world, ids, files):
    """Whatever type each label file stores its ids as, every labelled id meets its score (coverage 1)."""
    from pipelines.steps.labels import match_labels, read_labels

    config = world["config"]
    root = Path(tempfile.mkdtemp(prefix="labels-"))
    try:
        lake = config.model_copy(update={"data_root": root})
        folder = partition_dir(root, "labels", DS)
        folder.mkdir(parents=True)
        bounds = np.linspace(0, len(ids), len(files) + 1).astype(int)
        for number, (kind, start, stop) in enumerate(zip(files, bounds[:-1], bounds[1:])):
            chunk = ids[start:stop]
            if kind == "int32":
                chunk = [i % 2**31 for i in chunk]
                ids[start:stop] = chunk
            values = [str(i) for i in chunk] if kind == "string" else chunk
            column = pa.array(values, pa.string() if kind == "string" else pa.from_numpy_dtype(np.dtype(kind)))
            table = pa.table({config.id_column: column, config.target: pa.array([i % 2 for i in chunk], pa.int64())})
            pq.write_table(table, folder / f"part-{number}.parquet")
        if len(set(ids)) < len(ids):  # int32 wrapped two ids together: not this property's case
            return
        scores = pd.DataFrame({"id": np.array(ids, dtype="int64"), "score": 0.5})
        matched = match_labels(scores, read_labels(lake, DS))
        assert matched.coverage == 1.0 and matched.unscored_label_ids == 0, matched.issues
    finally:
        shutil.rmtree(root, ignore_errors=True)
