from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InvalidDateError, PartitionMissingError
from pipelines.storage.atomic import write_json_atomic, write_table_atomic
from pipelines.storage.partitions import list_partitions, parse_ds, partition_date, partition_dir, partition_files


@pytest.mark.parametrize("value", ["../../etc/passwd", "2026-13-01", "2026-02-30", "20260101", "2026-01-01/..", ""])
def test_partition_dates_must_be_real_dates(value):
    with pytest.raises(InvalidDateError):
        parse_ds(value)


def test_partition_dir_is_hive_style(tmp_path):
    assert partition_dir(tmp_path, "incoming", "2026-10-01") == tmp_path / "incoming" / "ds=2026-10-01"
    assert parse_ds("2026-10-01") == date(2026, 10, 1)


def test_missing_partition_raises_a_clear_error(tmp_path):
    with pytest.raises(PartitionMissingError, match="ds=2026-10-01 has no data files"):
        partition_files(tmp_path, "incoming", "2026-10-01")


def test_atomic_writes_leave_only_the_final_file(tmp_path):
    target = partition_dir(tmp_path, "predictions", "2026-10-01") / "predictions.parquet"
    (target.parent).mkdir(parents=True)
    (target.parent / "old-part.parquet").write_bytes(b"stale")
    write_table_atomic(target, pa.table({"id": [1, 2, 3]}))
    write_table_atomic(target, pa.table({"id": [4, 5]}))
    assert [p.name for p in target.parent.iterdir()] == ["predictions.parquet"]
    assert partition_files(tmp_path, "predictions", "2026-10-01") == [target]
    write_json_atomic(tmp_path / "q" / "v.json", {"a": 1})
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["v.json"]


def test_list_partitions_skips_empty_and_hidden(tmp_path):
    write_table_atomic(partition_dir(tmp_path, "incoming", "2026-10-02") / "a.parquet", pa.table({"x": [1]}))
    partition_dir(tmp_path, "incoming", "2026-10-01").mkdir(parents=True)
    (tmp_path / "incoming" / ".ds=2026-10-03.tmp").mkdir()
    assert list_partitions(tmp_path, "incoming") == [date(2026, 10, 2)]


def test_the_run_scores_the_requested_date_or_its_data_interval_start():
    start = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
    assert partition_date(None, start) == "2026-10-05"
    assert partition_date("2026-09-30", start) == "2026-09-30"
    with pytest.raises(InvalidDateError, match="trigger it with the `ds` Param"):
        partition_date(None, None)
    with pytest.raises(InvalidDateError):
        partition_date("../2026-09-30", start)


def test_the_earliest_partition_comes_from_one_listing(tmp_path):
    from pipelines.storage.partitions import earliest_partition

    assert earliest_partition(tmp_path, "incoming") is None  # no area yet
    for name in ("ds=2019-03-05", "ds=2019-03-04", "notes", ".ds=2001-01-01"):
        (tmp_path / "incoming" / name).mkdir(parents=True)
    assert str(earliest_partition(tmp_path, "incoming")) == "2019-03-04"


def test_a_republished_file_never_changes_under_an_open_reader(tmp_path):
    """Publishing swaps in a new file: a reader that opened the old one keeps reading the old one, whole."""
    target = tmp_path / "predictions" / "ds=2026-10-01" / "predictions.parquet"
    write_table_atomic(target, pa.table({"id": list(range(1000)), "run": ["first"] * 1000}))
    old_bytes = target.read_bytes()
    with open(target, "rb") as reader:
        write_table_atomic(target, pa.table({"id": list(range(5)), "run": ["second"] * 5}))
        assert reader.read() == old_bytes
    assert pq.read_table(target).column("run").to_pylist() == ["second"] * 5
    assert [p.name for p in target.parent.iterdir()] == ["predictions.parquet"]  # no temporary file left visible


def test_predictions_are_written_in_row_groups_a_reader_can_stream(tmp_path):
    target = tmp_path / "p" / "ds=2026-10-01" / "predictions.parquet"
    write_table_atomic(target, pa.table({"id": list(range(300_000))}))
    meta = pq.ParquetFile(target).metadata
    assert meta.num_row_groups == 3 and meta.row_group(0).num_rows == 131_072


def test_json_records_are_indented_for_people_and_dates_become_text(tmp_path):
    import json

    from pipelines.storage.atomic import write_json_atomic

    target = tmp_path / "validation.json"
    write_json_atomic(target, {"ds": date(2026, 10, 1), "failures": ["a"]})
    assert json.loads(target.read_text()) == {"ds": "2026-10-01", "failures": ["a"]}
    assert target.read_text().startswith('{\n  "ds"')  # two-space indent: a person opens the quarantine record


def test_a_file_digest_is_the_sha256_of_all_its_bytes(tmp_path):
    import hashlib
    import os

    from pipelines.storage.partitions import file_digest, partition_digest

    payload = os.urandom(3 * (1 << 20) + 17)  # more than one read block
    path = tmp_path / "part-0.parquet"
    path.write_bytes(payload)
    assert file_digest(path) == hashlib.sha256(payload).hexdigest()
    before = partition_digest([path])
    path.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # one bit of the last block
    assert file_digest(path) != hashlib.sha256(payload).hexdigest() and partition_digest([path]) != before


def test_a_night_before_the_configured_start_date_fails_and_says_why():
    start = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
    assert partition_date(None, start, date(2026, 10, 5)) == "2026-10-05"
    with pytest.raises(InvalidDateError, match="ds=2026-10-04 is before the config's start_date 2026-10-05"):
        partition_date("2026-10-04", start, date(2026, 10, 5))
    with pytest.raises(InvalidDateError, match="before the config's start_date"):
        partition_date(None, start, date(2026, 11, 1))


def test_a_night_before_the_first_partition_is_not_waited_for(config):
    from harness import sample_data
    from pipelines.storage.partitions import wait_for_partition

    sample_data.generate(config.data_root, date(2027, 1, 1), 1, 100, label_delay_days=0)  # data dated in the future
    with pytest.raises(PartitionMissingError, match="the earliest partition in incoming/ is ds=2027-01-01"):
        wait_for_partition(config, "2026-12-04")
    arrived, message = wait_for_partition(config, "2027-01-02")  # after the data starts: a night still to come
    assert not arrived and "has not arrived yet" in message


def test_parquet_files_on_the_object_store_are_written_and_read_through_its_filesystem(
    object_store, monkeypatch, tmp_path
):
    """Every Parquet wrapper takes an s3:// key: written through the store's filesystem, read back from it (and
    nothing lands on the local disk under the key's name)."""
    from pipelines.core.paths import LakePath
    from pipelines.storage.parquet import parquet_file, parquet_writer, read_metadata, read_parquet, read_schema
    from tests.conftest import fresh_bucket

    fresh_bucket(object_store, monkeypatch, "parquet-wrappers")
    monkeypatch.chdir(tmp_path)
    key = LakePath("parquet-wrappers", "lake/incoming/ds=2026-09-01/part-0.parquet")
    table = pa.table({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5]})
    with parquet_writer(key, table.schema) as writer:
        writer.write_table(table)
    assert not list(tmp_path.rglob("*.parquet"))  # the bytes went to the bucket
    assert read_metadata(key).num_rows == 3
    assert read_schema(key).names == ["id", "x"]
    assert read_parquet(key, columns=["x"]).column_names == ["x"]
    assert parquet_file(key).read().equals(table)
