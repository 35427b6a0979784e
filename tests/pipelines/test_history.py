"""The monitoring history table: an older deployment's table gains the columns a newer release adds."""

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from pipelines.core.contracts import NightRecord
from pipelines.storage import history


def test_an_older_history_table_gains_new_columns_and_keeps_its_rows(config):
    db_file = config.data_root / "monitoring" / "history.db"
    db_file.parent.mkdir(parents=True)
    old = sa.create_engine(f"sqlite:///{db_file}")
    columns = [c.copy() for c in history.NIGHTS.columns if c.name != "validation_warnings"]
    sa.Table("nights", sa.MetaData(), *columns).create(old)
    with old.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO nights (ds, model_name, model_version, rows) VALUES ('2026-09-01', :m, '1', 5)"),
            {"m": config.model.registered_name},
        )
    old.dispose()
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-02",
            model_name=config.model.registered_name,
            model_version="1",
            rows=7,
            validation_warnings=["column 'x': moved"],
        ),
    )
    frame = history.read_history(config).set_index("ds")
    assert frame.loc["2026-09-01", "rows"] == 5  # kept
    assert frame.loc["2026-09-02", "validation_warnings"] == ["column 'x': moved"]


def test_a_rerun_replaces_the_night_and_keeps_no_stale_fact(config):
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-03",
            model_name=config.model.registered_name,
            model_version="1",
            rows=10,
            drift_share=0.5,
            decision="retrain",
            decision_reasons=["drift"],
            airflow_run_id="first",
        ),
    )
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-03", model_name=config.model.registered_name, model_version="1", rows=12, airflow_run_id="rerun"
        ),
    )
    entry = history.night(config, "2026-09-03", config.model.registered_name, "1")
    assert (entry["rows"], entry["airflow_run_id"]) == (12, "rerun")
    assert entry["drift_share"] is None and entry["decision"] is None and entry["decision_reasons"] is None
    assert len(history.read_history(config)) == 1


def test_later_facts_are_added_to_the_night_they_belong_to(config):
    history.record_night(
        config, NightRecord(ds="2026-09-03", model_name=config.model.registered_name, model_version="1", rows=10)
    )
    history.record_night(
        config, NightRecord(ds="2026-09-03", model_name=config.model.registered_name, model_version="2", rows=11)
    )
    history.update_night(
        config,
        NightRecord(ds="2026-09-03", model_name=config.model.registered_name, model_version="1", label_coverage=0.5),
    )
    history.merge_task_seconds(config, "2026-09-03", config.model.registered_name, "1", {"a": 1.0})
    history.merge_task_seconds(config, "2026-09-03", config.model.registered_name, "1", {"b": 2.0})
    one, two = (
        history.night(config, "2026-09-03", config.model.registered_name, "1"),
        history.night(config, "2026-09-03", config.model.registered_name, "2"),
    )
    assert one["label_coverage"] == 0.5 and two["label_coverage"] is None
    assert one["task_seconds"] == {"a": 1.0, "b": 2.0} and one["rows"] == 10
    with pytest.raises(LookupError, match="record the night first"):
        history.update_night(
            config, NightRecord(ds="2026-09-04", model_name=config.model.registered_name, model_version="1", rows=1)
        )
    with pytest.raises(ValidationError, match="colour"):  # a fact the history has no column for is refused
        NightRecord(ds="2026-09-03", model_name=config.model.registered_name, model_version="1", colour="red")


def test_a_night_record_holds_exactly_the_history_columns():
    assert set(NightRecord.model_fields) | {"updated_at", "recorded_at"} == history.COLUMNS


def test_nights_of_two_models_with_the_same_version_number_stay_apart(config):
    history.record_night(config, NightRecord(ds="2026-09-03", model_name="churn", model_version="1", rows=10))
    history.record_night(config, NightRecord(ds="2026-09-03", model_name="credit", model_version="1", rows=20))
    history.update_night(
        config, NightRecord(ds="2026-09-03", model_name="churn", model_version="1", decision="retrain")
    )
    churn, credit = (
        history.night(config, "2026-09-03", "churn", "1"),
        history.night(config, "2026-09-03", "credit", "1"),
    )
    assert (churn["rows"], churn["decision"]) == (10, "retrain") and (credit["rows"], credit["decision"]) == (20, None)
    assert churn["updated_at"] is not None and credit["updated_at"] is not None


def test_a_night_is_quarantined_while_its_latest_record_is_a_refusal(config):
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-03", model_name=config.model.registered_name, model_version="1", validation_success=False
        ),
    )
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-04", model_name=config.model.registered_name, model_version="1", validation_success=False
        ),
    )
    assert history.quarantined_nights(config) == {"2026-09-03", "2026-09-04"}
    # an operator's accepted rerun of 09-03, recorded later (by another version): no longer quarantined
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-03", model_name=config.model.registered_name, model_version="2", validation_success=True
        ),
    )
    assert history.quarantined_nights(config) == {"2026-09-04"}


def test_the_history_reads_in_night_then_version_order_and_knows_the_versions_that_scored(config):
    assert not history.has_nights(config)
    for ds, version in (("2026-09-05", "2"), ("2026-09-03", "3"), ("2026-09-04", "3"), ("2026-09-04", "1")):
        history.record_night(
            config, NightRecord(ds=ds, model_name=config.model.registered_name, model_version=version, rows=1)
        )
    frame = history.read_history(config)
    assert list(zip(frame["ds"], frame["model_version"], strict=True)) == [
        ("2026-09-03", "3"),
        ("2026-09-04", "1"),
        ("2026-09-04", "3"),
        ("2026-09-05", "2"),
    ]
    assert history.scored_versions(config) == ["3", "1", "2"]  # by their first night, oldest first
    assert history.has_nights(config)
    assert history.night(config, "2026-09-06", config.model.registered_name, "1") is None


def test_one_history_database_holds_many_models_and_each_reads_only_its_own(config):
    other = config.model_copy(update={"model": config.model.model_copy(update={"registered_name": "another"})})
    history.record_night(
        other, NightRecord(ds="2026-09-03", model_name="another", model_version="7", validation_success=True)
    )
    history.record_night(
        other, NightRecord(ds="2026-09-04", model_name="another", model_version="7", validation_success=False)
    )
    assert not history.has_nights(config) and history.read_history(config).empty
    assert history.scored_versions(config) == [] and history.quarantined_nights(config) == set()
    history.record_night(
        config, NightRecord(ds="2026-09-03", model_name=config.model.registered_name, model_version="1")
    )
    assert history.read_history(config)["model_version"].tolist() == ["1"]
    assert history.scored_versions(other) == ["7"] and history.quarantined_nights(other) == {"2026-09-04"}
