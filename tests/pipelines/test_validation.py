import json
import re
from datetime import date

import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.errors import PartitionQuarantinedError
from pipelines.steps.profile import data_profile
from pipelines.steps.validation import validate_against_profile
from pipelines.storage.partitions import partition_dir
from pipelines.storage.schema import incoming_partition, read_table
from tests.conftest import write_config


@pytest.fixture
def lake(config):
    sample_data.generate(config.data_root, date(2026, 9, 1), 4, 1500, label_delay_days=0)
    return config


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """The training profile of seven generated days, computed as training does (no model needed: a fast test)."""
    import pandas as pd

    config = load_config(write_config(tmp_path_factory.mktemp("profile")))
    days = sample_data.generate(config.data_root, date(2026, 9, 1), 7, 2000, label_delay_days=0)
    frame = pd.concat(read_table(incoming_partition(config, d.isoformat())).to_pandas() for d in days)
    return data_profile(frame, config)


def _quarantine(config, ds):
    return json.loads((partition_dir(config.data_root, "quarantine", ds) / "validation.json").read_text())


def _rewrite(config, ds, change):
    import pandas as pd

    file = next(partition_dir(config.data_root, "incoming", ds).glob("*.parquet"))
    frame = pd.read_parquet(file)
    change(frame)
    frame.to_parquet(file, index=False)


def test_a_good_partition_passes_every_expectation(lake, profile):
    outcome = validate_against_profile(lake, "2026-09-01", profile)
    assert outcome.success and outcome.rows == 1500 and outcome.warnings == []
    # row count, id not null + unique, then null rate and range / known values per feature
    assert outcome.evaluated == 3 + 2 * 14
    assert not partition_dir(lake.data_root, "quarantine", "2026-09-01").exists()


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("missing_column", "required column 'annual_income' is missing in file part-0000.parquet"),
        ("truncated", "file part-0000.parquet in incoming/ds=2026-09-02 is not readable Parquet"),
    ],
)
def test_broken_partitions_are_quarantined_with_a_reason(lake, profile, defect, reason):
    sample_data.break_partition(lake.data_root, date(2026, 9, 2), defect)
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, "2026-09-02", profile, accepted_by="alice")  # unreadable data is never accepted
    assert reason in str(info.value)
    assert "rerun this date" in str(info.value)
    record = _quarantine(lake, "2026-09-02")
    assert reason in record["reason"]
    assert record["ds"] == "2026-09-02"
    if defect == "missing_column":  # refused by the schema resolution shared with scoring, before the GE suite
        assert record["failures"] == [
            "required column 'annual_income' is missing in file part-0000.parquet (1 file(s) in incoming/ds=2026-09-02)"
        ]


def test_duplicate_ids_null_ids_and_too_few_rows_are_broken(lake, profile):
    def damage(frame):
        frame.loc[:10, "application_id"] = frame.loc[0, "application_id"]

    _rewrite(lake, "2026-09-03", damage)
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, "2026-09-03", profile)
    assert "id column 'application_id': expected unique ids, found 0.73% of rows sharing an id" in str(info.value)
    assert "can never be accepted" in str(info.value) and "accept_quarantine" not in str(info.value)
    # the error carries what the history and the alert record, so they need nothing else
    assert info.value.ds == "2026-09-03" and info.value.rows == 1500
    assert any("expected unique ids" in failure for failure in info.value.failures)
    small = lake.model_copy(update={"validation": lake.validation.model_copy(update={"min_rows": 2000})})
    with pytest.raises(
        PartitionQuarantinedError, match=r"expected at least 2,000 rows \(validation.min_rows\), found 1,500"
    ):
        validate_against_profile(small, "2026-09-01", profile)


def test_shifted_data_is_scored_with_warnings_that_say_what_was_expected(lake, profile):
    sample_data.break_partition(lake.data_root, date(2026, 9, 2), "unknown_category")

    def move(frame):
        frame["annual_income"] = frame["annual_income"] * 3 + 500_000
        frame.loc[: len(frame) // 4, "debt_to_income"] = None

    _rewrite(lake, "2026-09-02", move)
    outcome = validate_against_profile(lake, "2026-09-02", profile)
    assert outcome.success and outcome.failures == []
    assert sorted(outcome.warned_columns) == ["annual_income", "debt_to_income", "loan_purpose"]
    text = " | ".join(outcome.warnings)
    income = profile["numeric"]["annual_income"]
    assert "column 'annual_income': 100.00% of values outside the expected range [" in text
    span = income["max"] - income["min"]
    low, high = income["min"] - 0.25 * span, income["max"] + 0.25 * span  # the margin is a share of the span
    assert (
        f"outside the expected range [{low:.6g}, {high:.6g}] (training [{income['min']:.6g}, {income['max']:.6g}] "
        "widened by validation.range_margin 0.25" in text
    )
    assert "found min 5" in text  # what the night holds
    assert "column 'loan_purpose': 33." in text and "categories unseen in training" in text and "'crypto'" in text
    assert "known: " in text and "'car'" in text
    assert re.search(
        r"column 'debt_to_income': expected at most \d\.\d\d% nulls \(training \d\.\d\d% \+ "
        r"validation.null_rate_tolerance\), found 2\d\.\d\d%",
        text,
    )
    assert not partition_dir(lake.data_root, "quarantine", "2026-09-02").exists()


def test_each_check_severity_is_configurable(lake, profile):
    sample_data.break_partition(lake.data_root, date(2026, 9, 4), "unknown_category")
    strict = lake.model_copy(
        update={
            "validation": lake.validation.model_copy(
                update={"severity": lake.validation.severity.model_copy(update={"unknown_categories": "quarantine"})}
            )
        }
    )
    with pytest.raises(PartitionQuarantinedError, match="'loan_purpose': 33.*categories unseen in training"):
        validate_against_profile(strict, "2026-09-04", profile)
    assert validate_against_profile(lake, "2026-09-04", profile).warned_columns == ["loan_purpose"]


def test_an_operator_can_accept_a_quarantined_night_and_a_fixed_one_clears_it(lake, profile):
    severity = lake.validation.severity.model_copy(update={"range": "quarantine"})
    strict = lake.model_copy(update={"validation": lake.validation.model_copy(update={"severity": severity})})
    _rewrite(strict, "2026-09-04", lambda f: f.__setitem__("age", 400))
    with pytest.raises(PartitionQuarantinedError):
        validate_against_profile(strict, "2026-09-04", profile)
    assert partition_dir(strict.data_root, "quarantine", "2026-09-04").exists()
    accepted = validate_against_profile(strict, "2026-09-04", profile, accepted_by="alice")
    assert accepted.success and accepted.warnings[0].startswith("accepted by alice: column 'age'")
    assert not partition_dir(strict.data_root, "quarantine", "2026-09-04").exists()  # usable for training now
    with pytest.raises(PartitionQuarantinedError):
        validate_against_profile(strict, "2026-09-04", profile)
    sample_data.write_day(strict.data_root, date(2026, 9, 4), 1500, 7, sample_data.DriftSpec(), with_labels=False)
    assert validate_against_profile(strict, "2026-09-04", profile).success
    assert not partition_dir(strict.data_root, "quarantine", "2026-09-04").exists()


@pytest.mark.parametrize("damage", ["duplicate", "null"])
def test_broken_ids_can_never_be_accepted(lake, profile, damage):
    value = 7 if damage == "duplicate" else None
    _rewrite(lake, "2026-09-04", lambda f: f.__setitem__("application_id", value))
    with pytest.raises(PartitionQuarantinedError, match="id column 'application_id'") as info:
        validate_against_profile(lake, "2026-09-04", profile, accepted_by="alice")
    assert "accept the night" not in str(info.value)
    assert _quarantine(lake, "2026-09-04")["acceptable"] is False


def test_unknown_categories_under_the_tolerance_pass_quietly(lake, profile):
    def few_unseen(frame):
        frame.loc[frame.index % 200 == 0, "loan_purpose"] = "crypto"  # 0.5%: under the 1% tolerance

    _rewrite(lake, "2026-09-03", few_unseen)
    assert validate_against_profile(lake, "2026-09-03", profile).warnings == []


def _split_into_two_files(config, ds, repeat_ids_from_first: int):
    """Rewrite a partition as two files; the second repeats `repeat_ids_from_first` ids of the first."""
    import pandas as pd

    folder = partition_dir(config.data_root, "incoming", ds)
    file = next(folder.glob("*.parquet"))
    frame = pd.read_parquet(file)
    first, second = frame.iloc[: len(frame) // 2].copy(), frame.iloc[len(frame) // 2 :].copy()
    second.iloc[:repeat_ids_from_first, second.columns.get_loc("application_id")] = first["application_id"].iloc[
        :repeat_ids_from_first
    ]
    file.unlink()
    first.to_parquet(folder / "part-0000.parquet", index=False)
    second.to_parquet(folder / "part-0001.parquet", index=False)


def _shift(frame):
    frame["annual_income"] = frame["annual_income"] * 3 + 500_000
    frame.loc[: len(frame) // 4, "debt_to_income"] = float("nan")
    frame.loc[frame.index % 3 == 0, "loan_purpose"] = "<script>alert(1)</script>"


DAMAGE = {
    "good": lambda config, ds: None,
    "shifted": lambda config, ds: _rewrite(config, ds, _shift),
    "null ids": lambda config, ds: _rewrite(
        config,
        ds,
        lambda f: f.__setitem__("application_id", f["application_id"].astype("Int64").where(f.index % 7 != 0)),
    ),
    "duplicate ids in one file": lambda config, ds: _rewrite(
        config, ds, lambda f: f.__setitem__("application_id", f.index // 3)
    ),
    "duplicate ids across two files": lambda config, ds: _split_into_two_files(config, ds, 12),
    "all nulls in a feature": lambda config, ds: _rewrite(config, ds, lambda f: f.__setitem__("annual_income", None)),
}


@pytest.mark.parametrize("column_block", [128, 4])  # all columns in one pass; a wide table's blocks of columns
@pytest.mark.parametrize("damage", DAMAGE)
def test_streamed_validation_agrees_with_great_expectations(lake, profile, damage, column_block, monkeypatch):
    """The streamed engine (small record batches here) and Great Expectations' own give the same verdicts and words."""
    from pipelines.steps import validation
    from pipelines.steps.validation import build_suite, check_partition, check_streamed, check_with_great_expectations

    monkeypatch.setattr(validation, "COLUMN_BLOCK", column_block)

    DAMAGE[damage](lake, "2026-09-02")
    small_batches = lake.model_copy(update={"scoring": lake.scoring.model_copy(update={"batch_rows": 1024})})
    engines = {
        name: small_batches.model_copy(
            update={"validation": small_batches.validation.model_copy(update={"engine": name})}
        )
        for name in ("streamed", "great_expectations")
    }
    outcomes = {name: check_partition(config, "2026-09-02", profile) for name, config in engines.items()}
    streamed, reference = outcomes["streamed"], outcomes["great_expectations"]
    assert (streamed.rows, streamed.evaluated) == (reference.rows, reference.evaluated) == (1500, 31)
    assert streamed.failures == reference.failures
    assert streamed.warnings == reference.warnings
    assert streamed.warned_columns == reference.warned_columns
    partition = incoming_partition(lake, "2026-09-02")
    suite = build_suite(lake, profile)
    by_engine = zip(
        check_streamed(partition, suite, 1024, lake.id_column),
        check_with_great_expectations(partition, suite, 1024),
        strict=True,
    )
    for ours, theirs in by_engine:
        assert ours.expectation.type == theirs.expectation.type
        assert (ours.success, ours.rows, ours.missing, ours.unexpected) == (
            theirs.success,
            theirs.rows,
            theirs.missing,
            theirs.unexpected,
        ), ours.expectation
        if ours.check not in ("null_rate", "id_not_null"):  # the examples of a null check are nulls
            assert ours.examples == theirs.examples, ours.expectation
    if damage != "good":
        assert streamed.failures or streamed.warnings  # each damage is one the suite sees


def test_duplicate_ids_across_two_files_of_a_partition_are_quarantined(lake, profile):
    _split_into_two_files(lake, "2026-09-02", 3)
    with pytest.raises(PartitionQuarantinedError) as info:
        validate_against_profile(lake, "2026-09-02", profile)
    # 3 ids appear in both files: 6 of 1,500 rows share an id
    assert "expected unique ids, found 0.40% of rows sharing an id" in str(info.value)
    record = _quarantine(lake, "2026-09-02")
    assert record["files"] == ["part-0000.parquet", "part-0001.parquet"]
    (unique,) = [
        r
        for r in record["great_expectations_result"]["results"]
        if r["expectation_config"]["meta"]["check"] == "id_unique"
    ]
    assert unique["result"]["unexpected_count"] == 6 and not unique["success"]


def test_a_check_result_is_recorded_in_great_expectations_shape_as_plain_json():
    from types import SimpleNamespace

    import numpy as np

    from pipelines.steps.validation import CheckResult

    expectation = SimpleNamespace(
        type="expect_column_values_to_be_between", kwargs={"column": "x", "min_value": 0}, meta=None
    )
    result = CheckResult(
        expectation, False, rows=10, missing=2, unexpected=4, examples=[np.int64(-3), np.float64(-0.5)]
    )
    record = result.as_record()
    assert record == {
        "expectation_config": {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "x", "min_value": 0},
            "meta": {},
        },
        "success": False,
        "result": {
            "element_count": 10,
            "missing_count": 2,
            "unexpected_count": 4,
            "unexpected_percent": 50.0,  # of the 8 values considered, not of the 10 rows
            "partial_unexpected_list": [-3, -0.5],
        },
        "exception_info": {"raised_exception": False, "exception_message": None},
    }
    assert [type(v) for v in record["result"]["partial_unexpected_list"]] == [int, float]  # plain, so JSON takes it
    record["expectation_config"]["kwargs"]["column"] = "y"
    assert expectation.kwargs["column"] == "x"  # the record is a copy: editing it leaves the suite alone
    failed = CheckResult(
        SimpleNamespace(type="t", kwargs={}, meta={"check": "range"}), False, rows=3, missing=3, error="boom"
    )
    assert failed.check == "range" and failed.unexpected_percent == 0.0
    assert failed.as_record()["exception_info"] == {"raised_exception": True, "exception_message": "boom"}
    assert failed.as_record()["expectation_config"]["meta"] == {"check": "range"}


def _result(check, kwargs, meta=None, **counts):
    from types import SimpleNamespace

    from pipelines.steps.validation import CheckResult

    return CheckResult(
        SimpleNamespace(type=f"expect_{check}", kwargs=kwargs, meta={"check": check, **(meta or {})}), False, **counts
    )


MESSAGES = [
    (
        _result("row_count", {"min_value": 2000}, rows=1500),
        "row count: expected at least 2,000 rows (validation.min_rows), found 1,500",
    ),
    (
        _result("id_not_null", {"column": "id"}, rows=200, unexpected=3),
        "id column 'id': expected no null ids, found 1.50% null",
    ),
    (
        _result("id_unique", {"column": "id"}, rows=100, unexpected=8, examples=[7, 3, 7, 9, 1, 2, 5, 4]),
        "id column 'id': expected unique ids, found 8.00% of rows sharing an id, for example ['1', '2', '3', '4', '5']",
    ),
    (
        _result("null_rate", {"column": "age", "mostly": 0.9}, {"training_null_rate": 0.05}, rows=100, unexpected=20),
        "column 'age': expected at most 10.00% nulls (training 5.00% + validation.null_rate_tolerance), found 20.00%",
    ),
    (
        _result(
            "range",
            {"column": "income", "min_value": -2.5, "max_value": 12.5, "mostly": 0.99},
            {"training_min": 0.0, "training_max": 10.0},
            rows=110,
            missing=10,
            unexpected=5,
            present_min=-1234567.0,
            present_max=3.0,
        ),
        "column 'income': 5.00% of values outside the expected range [-2.5, 12.5] (training [0, 10] widened by "
        "validation.range_margin 0.25; allowed 1.00%); found min -1.23457e+06, max 3",
    ),
    (
        _result(
            "range",
            {"column": "x", "min_value": 0, "max_value": 1},
            {"training_min": 0, "training_max": 1},
            rows=4,
            unexpected=4,
        ),
        "column 'x': 100.00% of values outside the expected range [0, 1] (training [0, 1] widened by "
        "validation.range_margin 0.25; allowed 0.00%)",
    ),
    (
        _result(
            "unknown_categories",
            {"column": "c", "value_set": list("abcdefghij"), "mostly": 0.99},
            rows=50,
            unexpected=1,
            examples=["<b>z</b>"],
        ),
        "column 'c': 2.00% of values are categories unseen in training (allowed 1.00%), for example ['<b>z</b>']; "
        "known: 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h' and 2 more",
    ),
    (
        _result("unknown_categories", {"column": "c", "value_set": ["a", "b"]}, rows=10, unexpected=10, examples=["q"]),
        "column 'c': 100.00% of values are categories unseen in training (allowed 0.00%), for example ['q']; "
        "known: 'a', 'b'",
    ),
    (
        _result("range", {"column": "x"}, rows=4, error="could not compare strings with numbers"),
        "range check of column 'x' could not be evaluated: could not compare strings with numbers",
    ),
    (_result("other", {"column": "x"}, rows=9, unexpected=2), "expect_other(x): 2 unexpected of 9"),
]


@pytest.mark.parametrize(("result", "message"), MESSAGES, ids=[m[:30] for _, m in MESSAGES])
def test_each_failed_check_says_what_was_expected_and_what_was_found(config, result, message):
    from pipelines.steps.validation import describe_results

    failures, warnings, warned = describe_results(config, [result])
    assert [*failures, *warnings] == [message]


def test_checks_that_warn_name_their_feature_column_once_and_broken_data_always_quarantines(lake):
    from pipelines.steps.validation import describe_results

    feature = lake.features.numeric[0]
    passed = _result("range", {"column": feature})
    passed.success = True
    results = [
        _result(
            "range",
            {"column": feature, "min_value": 0, "max_value": 1},
            {"training_min": 0, "training_max": 1},
            rows=2,
            unexpected=1,
        ),
        _result("null_rate", {"column": feature, "mostly": 0.5}, {"training_null_rate": 0.0}, rows=2, unexpected=2),
        _result(
            "null_rate", {"column": "not_a_feature", "mostly": 0.5}, {"training_null_rate": 0.0}, rows=2, unexpected=2
        ),
        _result("id_unique", {"column": lake.id_column}, rows=2, unexpected=2, examples=[1, 1]),
        passed,
    ]
    failures, warnings, warned = describe_results(lake, results)
    assert len(warnings) == 3 and warned == [feature]
    assert failures == [
        f"id column {lake.id_column!r}: expected unique ids, found 100.00% of rows sharing an id, for example ['1']"
    ]
    strict = lake.model_copy(
        update={
            "validation": lake.validation.model_copy(
                update={"severity": lake.validation.severity.model_copy(update={"null_rate": "quarantine"})}
            )
        }
    )
    failures, warnings, warned = describe_results(strict, results)
    assert len(failures) == 3 and len(warnings) == 1 and warned == [feature]


def test_a_folder_named_like_a_data_file_is_refused_at_once_by_name(lake, profile):
    from pipelines.storage.partitions import list_partitions, wait_for_partition

    folder = partition_dir(lake.data_root, "incoming", "2026-09-03")
    file = next(folder.glob("*.parquet"))
    (folder / "part-0.parquet").mkdir()
    file.rename(folder / "part-0.parquet" / "inner.parquet")  # the partition holds only the folder now
    arrived, message = wait_for_partition(lake, "2026-09-03")
    assert arrived and "holds a folder where only data files belong (part-0.parquet/)" in message
    assert date(2026, 9, 3) in list_partitions(lake.data_root, "incoming")
    with pytest.raises(
        PartitionQuarantinedError, match=r"holds a folder where only data files belong \(part-0.parquet/\)"
    ):
        validate_against_profile(lake, "2026-09-03", profile, accepted_by="alice")
    assert "part-0.parquet/" in _quarantine(lake, "2026-09-03")["reason"]
    assert validate_against_profile(lake, "2026-09-02", profile).success  # the other nights go on
