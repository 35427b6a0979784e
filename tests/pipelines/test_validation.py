import json
from datetime import date

import pytest

from pipelines import registry, sample_data
from pipelines.errors import PartitionQuarantinedError
from pipelines.lake import partition_dir
from pipelines.validation import validate_partition


@pytest.fixture
def lake(config):
    sample_data.generate(config.data_root, date(2026, 9, 1), 4, 1500, label_delay_days=0)
    return config


@pytest.fixture(scope="module")
def profile(champion_lake):
    return registry.load_profile(champion_lake, registry.champion(champion_lake))


def _quarantine(config, ds):
    return json.loads((partition_dir(config.data_root, "quarantine", ds) / "validation.json").read_text())


def test_a_good_partition_passes_every_expectation(lake, profile):
    outcome = validate_partition(lake, "2026-09-01", profile)
    assert outcome.success and outcome.rows == 1500
    # column exists (id, 14 features, timestamp), row count, id not null + unique, 3 per feature
    assert outcome.evaluated == 16 + 1 + 2 + 3 * 10 + 3 * 4
    assert not partition_dir(lake.data_root, "quarantine", "2026-09-01").exists()


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("missing_column", "required column 'annual_income' is missing in file part-0000.parquet"),
        ("unknown_category", "expect_column_values_to_be_in_set(loan_purpose): 33."),
        ("truncated", "file part-0000.parquet in incoming/ds=2026-09-02 is not readable Parquet"),
    ],
)
def test_bad_partitions_are_quarantined_with_a_reason(lake, profile, defect, reason):
    sample_data.break_partition(lake.data_root, date(2026, 9, 2), defect)
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_partition(lake, "2026-09-02", profile)
    assert reason in str(info.value)
    assert "rerun this date" in str(info.value)
    record = _quarantine(lake, "2026-09-02")
    assert reason in record["reason"]
    assert record["ds"] == "2026-09-02"
    if defect == "unknown_category":
        assert record["great_expectations_result"]["success"] is False
    if defect == "missing_column":  # refused by the schema resolution shared with scoring, before the GE suite
        assert record["failures"] == [
            "required column 'annual_income' is missing in file part-0000.parquet (1 file(s) in incoming/ds=2026-09-02)"
        ]


def test_duplicate_ids_and_null_bursts_fail(lake, profile):
    import pandas as pd

    file = next(partition_dir(lake.data_root, "incoming", "2026-09-03").glob("*.parquet"))
    frame = pd.read_parquet(file)
    frame.loc[:10, "application_id"] = frame.loc[0, "application_id"]
    frame.loc[: len(frame) // 4, "debt_to_income"] = None
    frame.to_parquet(file, index=False)
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_partition(lake, "2026-09-03", profile)
    assert "expect_column_values_to_be_unique(application_id)" in str(info.value)
    assert "expect_column_values_to_not_be_null(debt_to_income)" in str(info.value)


def test_a_fixed_partition_clears_its_quarantine(lake, profile):
    sample_data.break_partition(lake.data_root, date(2026, 9, 4), "unknown_category")
    with pytest.raises(PartitionQuarantinedError):
        validate_partition(lake, "2026-09-04", profile)
    sample_data.write_day(lake.data_root, date(2026, 9, 4), 1500, 7, sample_data.DriftSpec(), with_labels=False)
    assert validate_partition(lake, "2026-09-04", profile).success
    assert not partition_dir(lake.data_root, "quarantine", "2026-09-04").exists()
