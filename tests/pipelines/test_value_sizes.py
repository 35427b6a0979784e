"""Values, not rows: a huge text value is cut when read, reported by validation, and kept out of reports' memory."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.errors import PartitionQuarantinedError
from pipelines.steps.drift import OTHER, group_rare_categories
from pipelines.steps.profile import data_profile
from pipelines.steps.validation import validate_against_profile
from pipelines.storage.partitions import partition_dir
from pipelines.storage.schema import BATCH_BYTES, CUT_MARK, ReadTally, incoming_partition, iter_batches, read_table
from tests.conftest import write_config

DS = "2026-09-02"


@pytest.fixture
def lake(tmp_path):
    config = load_config(write_config(tmp_path, validation={"max_value_chars": 100}))
    sample_data.generate(config.data_root, date(2026, 9, 1), 2, 1000, label_delay_days=0)
    return config


@pytest.fixture
def profile(lake):
    return data_profile(read_table(incoming_partition(lake, "2026-09-01")).to_pandas(), lake)


def _replace_column(config, column, values, **write_options):
    file = next(partition_dir(config.data_root, "incoming", DS).glob("*.parquet"))
    table = pq.read_table(file)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(table, file, **write_options)
    return file


def test_a_long_category_is_cut_when_read_and_validation_warns_naming_column_file_and_size(lake, profile):
    values = ["car"] * 1000
    values[7] = "y" * 5000
    file = _replace_column(lake, "loan_purpose", pa.array(values))
    outcome = validate_against_profile(lake, DS, profile)
    assert outcome.success
    assert (
        f"column 'loan_purpose' holds a value of 5,000 characters in file incoming/ds={DS}/{file.name} (the "
        "longest allowed is 100, validation.max_value_chars): such values are cut to 100 characters for scoring "
        "and reports"
    ) in outcome.warnings
    read = read_table(incoming_partition(lake, DS)).column("loan_purpose").to_pylist()
    assert read[7] == "y" * 100 + CUT_MARK and read[6] == "car"


def test_long_categories_quarantine_when_so_configured(tmp_path):
    config = load_config(
        write_config(tmp_path, validation={"max_value_chars": 100, "severity": {"long_values": "quarantine"}})
    )
    sample_data.generate(config.data_root, date(2026, 9, 1), 2, 1000, label_delay_days=0)
    profile = data_profile(read_table(incoming_partition(config, "2026-09-01")).to_pandas(), config)
    _replace_column(config, "region", pa.array(["north"] * 999 + ["z" * 101]))
    with pytest.raises(PartitionQuarantinedError, match="column 'region' holds a value of 101 characters"):
        validate_against_profile(config, DS, profile)


def test_a_long_id_is_broken_data_and_cannot_be_accepted(lake, profile):
    _replace_column(lake, "application_id", pa.array([f"{i:04d}" + "i" * 200 for i in range(1000)]))
    with pytest.raises(PartitionQuarantinedError, match="column 'application_id' holds a value of 204 characters"):
        validate_against_profile(lake, DS, profile, accepted_by="alice")


READ_PEAK = """
import json, sys
from pathlib import Path
from pipelines.core.config import load_config
from pipelines.storage.schema import ReadTally, incoming_partition, iter_batches

def peak():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))

config = load_config(sys.argv[1])
before, seen = peak(), ReadTally()
cut = sum(b.column("loan_purpose").nbytes for b in iter_batches(incoming_partition(config, sys.argv[2]), 65536, seen))
print(json.dumps({"grew_mb": (peak() - before) / 1024, "cut_bytes": cut, "over": seen.over(100)}))
"""


@pytest.mark.parametrize("typed", [True, False], ids=["arrow-dictionary", "parquet-dictionary-encoded-text"])
def test_a_dictionary_value_repeated_on_every_row_is_cut_before_it_is_decoded(lake, typed):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    huge = "w" * 1_000_000
    if typed:
        column = pa.DictionaryArray.from_arrays(pa.array([0] * 1000, pa.int32()), pa.array([huge]))
    else:
        column = pa.array([huge] * 1000)  # plain text; the writer stores the value once in its dictionary page
    _replace_column(lake, "loan_purpose", column)
    config_file = lake.data_root.parent / "pipeline.yaml"
    out = subprocess.run(
        [sys.executable, "-c", READ_PEAK, str(config_file), DS],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"ARROW_DEFAULT_MEMORY_POOL": "system", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    read = json.loads(out.stdout.strip().splitlines()[-1])
    # decoded densely the column would be 1 GB; cut from the dictionary it is 1000 x 101 characters
    assert read["grew_mb"] < 200 and read["cut_bytes"] < 200_000
    assert read["over"] == [["loan_purpose", "part-0000.parquet", 1_000_000]]


def test_batches_of_wide_rows_are_sized_by_bytes(lake):
    rows = 1000
    _replace_column(
        lake, "loan_purpose", pa.array([f"{i:06d}" + "x" * 200_000 for i in range(rows)]), row_group_size=500
    )
    batches = list(iter_batches(incoming_partition(lake, DS), 65_536))
    assert sum(b.num_rows for b in batches) == rows
    assert max(b.num_rows for b in batches) <= BATCH_BYTES // 200_000 + 1  # not 1000 rows x 200 kB at once
    assert all(v.endswith(CUT_MARK) for b in batches for v in b.column("loan_purpose").to_pylist())


def test_rare_categories_are_grouped_past_the_limit():
    current = pd.Series([f"c{i}" for i in range(300)] + ["common"] * 300 + [None] * 5, dtype=object)
    reference = pd.Series(["common"] * 50 + ["ref_only"] * 40 + [f"r{i}" for i in range(100)], dtype=object)
    cur, ref = group_rare_categories(current, reference, keep=3)
    assert set(cur.dropna()) == {"common", OTHER} and cur.isna().sum() == 5
    assert set(ref) == {"common", "ref_only", OTHER}
    assert (cur == OTHER).sum() == 300 and (ref == OTHER).sum() == 100
    few = pd.Series(["a", "b"], dtype=object)
    assert group_rare_categories(few, few, keep=3)[0] is few


def test_a_footer_that_lies_about_its_rows_is_broken_and_named(lake, profile):
    sample_data.break_partition(lake.data_root, date(2026, 9, 2), "lying_footer")
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, DS, profile, accepted_by="alice")
    assert (
        f"file part-0000.parquet in incoming/ds={DS} is damaged: its footer claims 1,000,000,000,000,000 rows but its "
        "row groups hold 1,000; rewrite the file"
    ) in str(info.value)


def test_rows_read_are_held_against_each_files_footer(lake):
    from pipelines.steps.validation import lying_footers

    partition = incoming_partition(lake, DS)
    seen = ReadTally()
    list(iter_batches(partition, 300, seen))
    assert seen.rows == {"part-0000.parquet": 1000} and lying_footers(partition, seen, DS) == []
    seen.rows["part-0000.parquet"] = 999
    assert lying_footers(partition, seen, DS) == [
        f"file incoming/ds={DS}/part-0000.parquet is damaged: its footer claims 1,000 rows but it holds 999; "
        "rewrite the file"
    ]


def test_a_column_chunk_too_big_to_decode_is_refused(lake, monkeypatch):
    from pipelines.storage import schema

    monkeypatch.setattr(schema, "MAX_CHUNK_BYTES", 4096)
    with pytest.raises(Exception, match="column 'application_id' of row group 0 in file part-0000.parquet"):
        incoming_partition(lake, DS)
