"""One schema resolution for validation and scoring: compatible files are unified, incompatible ones refused by name."""

import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import DataRootError, PartitionQuarantinedError, PipelineError
from pipelines.governance.registry import Registry
from pipelines.steps.validation import validate_against_profile
from pipelines.storage.partitions import partition_dir, wait_for_partition
from tests.conftest import score_with_champion

DS = "2026-09-11"


@pytest.fixture
def lake(champion_lake, tmp_path):
    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    return champion_lake.model_copy(update={"data_root": data})


@pytest.fixture(scope="module")
def night(champion_lake):
    return pd.read_parquet(partition_dir(champion_lake.data_root, "incoming", DS))


@pytest.fixture(scope="module")
def profile(champion_lake):
    return Registry.open(champion_lake).load_profile(Registry.open(champion_lake).champion())


def _land(config, parts: dict[str, pa.Table]) -> None:
    folder = partition_dir(config.data_root, "incoming", DS)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, table in parts.items():
        pq.write_table(table, folder / name)


def _split(night: pd.DataFrame, at: int = 1900) -> tuple[pa.Table, pa.Table]:
    return pa.Table.from_pandas(night.iloc[:at], preserve_index=False), pa.Table.from_pandas(
        night.iloc[at:], preserve_index=False
    )


def _predictions(config):
    return pd.read_parquet(partition_dir(config.data_root, "predictions", DS))


def test_a_file_without_a_column_is_refused_by_validation_and_by_scoring(lake, night, profile):
    first, second = _split(night)
    _land(lake, {"part-0.parquet": first, "part-1.parquet": second.drop_columns(["loan_amount"])})
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, DS, profile)
    assert info.value.failures == [
        f"required column 'loan_amount' is missing in file part-1.parquet (2 file(s) in incoming/ds={DS})"
    ]
    with pytest.raises(PipelineError, match="part-1.parquet") as scored:
        score_with_champion(lake, DS, "run")
    assert "rerun the whole night" in str(scored.value)
    assert not partition_dir(lake.data_root, "predictions", DS).joinpath("predictions.parquet").exists()


def test_compatible_types_across_files_are_unified_and_every_row_is_scored(lake, night, profile):
    night = night.assign(application_id=range(len(night)))
    first, second = _split(night)
    second = second.set_column(0, "application_id", second["application_id"].cast(pa.int32()))
    second = second.set_column(
        second.schema.get_field_index("open_accounts"), "open_accounts", second["open_accounts"].cast(pa.float64())
    )
    first = first.set_column(
        first.schema.get_field_index("open_accounts"),
        "open_accounts",
        pa.chunked_array([pa.array(night["open_accounts"].iloc[:1900].fillna(0).astype("int64"))]),
    )
    second = second.set_column(second.schema.get_field_index("region"), "region", second["region"].dictionary_encode())
    _land(lake, {"part-0.parquet": first, "part-1.parquet": second})
    outcome = validate_against_profile(lake, DS, profile)
    assert outcome.success and outcome.rows == len(night)
    score_with_champion(lake, DS, "run")
    out = _predictions(lake)
    assert out["id"].dtype == "int64" and sorted(out["id"]) == sorted(night["application_id"])
    assert out["score"].notna().all()


def test_a_pandas_category_column_is_read_as_text(lake, night, profile):
    frame = night.astype({"loan_purpose": "category", "home_ownership": "category"})
    _land(lake, {"part-0.parquet": pa.Table.from_pandas(frame, preserve_index=False)})
    assert validate_against_profile(lake, DS, profile).success
    score_with_champion(lake, DS, "run")
    assert len(_predictions(lake)) == len(night)


def test_text_in_a_numeric_column_is_refused_with_its_file(lake, night, profile):
    first, second = _split(night)
    second = second.set_column(second.schema.get_field_index("age"), "age", second["age"].cast(pa.string()))
    _land(lake, {"a.parquet": first, "b.parquet": second})
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, DS, profile)
    assert info.value.failures == [
        "column 'age' is string, but numeric features need a number, boolean, date or timestamp type (file b.parquet: string)"
    ]


def test_ids_of_two_kinds_are_refused(lake, night, profile):
    first, second = _split(night)
    second = second.set_column(0, "application_id", second["application_id"].cast(pa.string()))
    _land(lake, {"a.parquet": first, "b.parquet": second})
    with pytest.raises(PartitionQuarantinedError, match="column 'application_id' mixes int64 and string across files"):
        validate_against_profile(lake, DS, profile)


def test_files_without_the_parquet_extension_are_data(lake, night, profile):
    first, second = _split(night)
    _land(lake, {"part-00000": first, "PART-1.PARQUET": second})
    (partition_dir(lake.data_root, "incoming", DS) / "_SUCCESS").write_text("")
    arrived, message = wait_for_partition(lake, DS)
    assert arrived and "2 file(s)" in message
    assert validate_against_profile(lake, DS, profile).success
    score_with_champion(lake, DS, "run")
    assert len(_predictions(lake)) == len(night)


def test_a_file_that_is_not_parquet_is_named(lake, night, profile):
    _land(lake, {"part-0.parquet": pa.Table.from_pandas(night, preserve_index=False)})
    (partition_dir(lake.data_root, "incoming", DS) / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, DS, profile)
    assert info.value.failures[0].startswith(f"file notes.csv in incoming/ds={DS} is not readable Parquet")


def test_waiting_cannot_help_when_the_data_root_is_wrong(lake, tmp_path):
    assert wait_for_partition(lake, DS)[0] is False  # an empty root: the partition may still arrive
    missing = lake.model_copy(update={"data_root": tmp_path / "nowhere"})
    with pytest.raises(DataRootError, match="does not exist"):
        wait_for_partition(missing, DS)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataRootError, match="is a file, not a folder"):
        wait_for_partition(lake.model_copy(update={"data_root": tmp_path / "a-file"}), DS)
    partition_dir(lake.data_root, "incoming", DS).write_text("")
    with pytest.raises(DataRootError, match="is a file, not a partition folder"):
        wait_for_partition(lake, DS)
