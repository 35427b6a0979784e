"""Monitoring of scored nights on a real lake, MLflow store, Evidently reports and history database."""

import html
import json
import shutil
from datetime import date

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from harness import sample_data
from pipelines.core.contracts import NightRecord
from pipelines.flows import evaluation, nightly
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir
from tests.conftest import score_night


@pytest.fixture(scope="module")
def night(champion_lake, tmp_path_factory):
    """A private copy of the champion lake with night 2026-09-11 scored and monitored."""
    data = tmp_path_factory.mktemp("monitoring") / "data"
    shutil.copytree(champion_lake.data_root, data)
    config = champion_lake.model_copy(update={"data_root": data})
    validated, scored = score_night(config, "2026-09-11", "run-1")
    summary = nightly.monitor_night(config, validated, scored, "run-1")
    return config, validated, scored, summary


def test_reports_are_written_as_html_and_json(night):
    config, _, _, summary = night
    folder = partition_dir(config.data_root, "reports", "2026-09-11")
    for stem in ("drift", "data_summary"):
        html = folder / f"{stem}.html"
        assert html.stat().st_size < 10_000_000
        assert "<html" in html.read_text()[:2000].lower()
        json.loads((folder / f"{stem}.json").read_text())
    assert json.loads((folder / "summary.json").read_text())["ds"] == "2026-09-11"
    assert config.id_column in (folder / "data_summary.html").read_text()  # the id column's role is named
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_stable_night_does_not_drift_and_estimates_track_training(night):
    config, _, scored, summary = night
    assert summary.drift_share == 0.0 and summary.drifted_columns == []
    assert not summary.score_drifted
    assert 0.6 < summary.estimated_roc_auc < 0.95
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    assert entry["validation_success"] and entry["rows"] == 2000
    assert set(entry["drift_stats"]) == {*config.features.all, "score"}
    assert entry["drift_stats"]["annual_income"]["method"] == "wasserstein"
    assert entry["scoring_rows_per_s"] > 0 and "monitor_night" in entry["task_seconds"]


def test_drifted_night_is_flagged(night, tmp_path):
    config, _, _, _ = night
    drifted = sample_data.DriftSpec(start=date(2026, 9, 12), covariate=True)
    sample_data.write_day(config.data_root, date(2026, 9, 12), 2000, 7, drifted, with_labels=False)
    validated, scored = score_night(config, "2026-09-12", "run-2")
    summary = nightly.monitor_night(config, validated, scored, "run-2")
    assert {"credit_utilization", "annual_income"} <= set(summary.drifted_columns)
    assert summary.drift_share >= 0.2


def test_rerunning_a_night_leaves_one_entry(night):
    config, validated, scored, _ = night
    nightly.monitor_night(config, validated, scored, "run-1b")
    frame = history.read_history(config)
    assert (frame["ds"] == "2026-09-11").sum() == 1
    assert frame.loc[frame["ds"] == "2026-09-11", "airflow_run_id"].item() == "run-1b"


def test_late_labels_fill_the_right_night_and_match_scikit_learn(night):
    config, _, scored, _ = night
    # labels for 2026-09-11 arrive now, first half of them, then all of them
    full = sample_data.generate_chunk(date(2026, 9, 11), 0, 2000, 7, sample_data.DriftSpec())
    labels = partition_dir(config.data_root, "labels", "2026-09-11")
    labels.mkdir(parents=True, exist_ok=True)
    full[["application_id", "defaulted"]].iloc[:1000].to_parquet(labels / "part-0000.parquet", index=False)
    done = evaluation.evaluate_labels(config)
    assert [d.ds for d in done] == ["2026-09-11"]
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    assert entry["label_coverage"] == pytest.approx(0.5)
    full[["application_id", "defaulted"]].to_parquet(labels / "part-0000.parquet", index=False)
    assert [d.ds for d in evaluation.evaluate_labels(config)] == ["2026-09-11"]
    assert evaluation.evaluate_labels(config) == []  # nothing new
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    predictions = pd.read_parquet(partition_dir(config.data_root, "predictions", "2026-09-11"))
    joined = predictions.merge(full, left_on="id", right_on="application_id")
    assert entry["label_coverage"] == 1.0
    assert entry["realised_roc_auc"] == pytest.approx(roc_auc_score(joined["defaulted"], joined["score"]))
    assert abs(entry["realised_roc_auc"] - entry["estimated_roc_auc"]) < 0.05
    performance = (partition_dir(config.data_root, "reports", "2026-09-11") / "performance.html").read_text()
    assert config.target in performance and config.target != "target"  # the label named as the config names it


def test_decision_is_recorded(night):
    config, _, scored, summary = night
    decision = nightly.decide_retraining(config, summary, [], force=False)
    assert decision.retrain is False and decision.reasons == []
    forced = nightly.decide_retraining(config, summary, [], force=True)
    assert forced.retrain is True and forced.reasons == ["force_retrain was set on the run"]
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    assert entry["decision"] == "retrain"


def test_warned_columns_count_as_drifted_and_every_surface_shows_the_warning(night):
    from pipelines.surfaces.monitoring_page import render_page

    config, validated, scored, _ = night
    warning = "column 'loan_purpose': 40.00% of values are categories unseen in training, for example ['<script>x']"
    warned = validated.model_copy(update={"warnings": [warning], "warned_columns": ["loan_purpose"]})
    summary = nightly.monitor_night(config, warned, scored, "run-3")
    assert summary.warned_columns == ["loan_purpose"] and summary.validation_warnings == [warning]
    assert summary.drift_share == pytest.approx(1 / len(config.features.all))  # the calm night's only "drift"
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    assert entry["validation_warnings"] == [warning] and entry["drift_share"] == summary.drift_share
    page = (partition_dir(config.data_root, "reports", "2026-09-11") / "validation.html").read_text()
    assert "[&#x27;&lt;script&gt;x&#x27;]" in page and "<script>" not in page  # a data value never acts
    monitoring_page = render_page(config, "/monitoring")
    assert (
        '<tr data-status="warned"' in monitoring_page
        and "&lt;script&gt;x" in monitoring_page
        and "<script>x" not in monitoring_page
    )
    assert "/monitoring/reports/ds=2026-09-11/validation.html" in monitoring_page
    # the decision reads the drift share that includes the warned column
    assert history.read_history(config).set_index("ds").loc["2026-09-11", "drift_share"] > 0


def test_the_page_shows_each_stage_s_seconds_adding_up_to_the_night_s_total_and_the_scoring_engine(night):
    from pipelines.surfaces.monitoring_page import render_page

    config, _, scored, summary = night
    nightly.decide_retraining(config, summary, [], force=False)
    entry = history.night(config, "2026-09-11", scored.model_name, scored.model_version)
    seconds = entry["task_seconds"]
    assert set(seconds) == {"validate_partition", "score_partition", "monitor_night", "decide_retraining"}
    assert seconds["score_partition"] == pytest.approx(scored.seconds)
    assert entry["scoring_engine"] == "sklearn" and entry["scoring_engine_reason"] == "scoring.engine is sklearn"
    assert entry["scoring_engine_rows"] == {"compiled": 0, "sklearn": scored.rows}
    page = render_page(config, "/monitoring")
    shown = {key: f"{value:.1f}" if value >= 0.05 else "<0.1" for key, value in seconds.items()}
    cell = (
        f"validate {shown['validate_partition']} + score {shown['score_partition']} + "
        f"monitor {shown['monitor_night']} + decide {shown['decide_retraining']}"
    )
    assert html.escape(cell) in page
    assert f'<td data-sort="{sum(seconds.values()):.3f}"><b>{sum(seconds.values()):.1f} s</b>' in page
    assert f'<span title="scoring.engine is sklearn">sklearn (sklearn {scored.rows:,} rows)</span>' in page


def test_monitoring_logs_a_start_and_an_end_line_per_stage(night, caplog):
    config, validated, scored, _ = night
    caplog.set_level("INFO", logger="pipelines.flows.nightly")
    nightly.monitor_night(config, validated, scored, "run-logs")
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.flows.nightly"]
    stages = ["load the champion's reference", "sample the night", "estimate performance", "drift report"]
    stages += ["data summary report", "publish the reports", "expire old reports"]
    for name in stages:
        assert f"stage {name}: started" in lines, name
        assert any(line.startswith(f"stage {name}: done in ") and line.endswith(" s") for line in lines), name
    assert any(line.startswith("night 2026-09-11 monitored in ") for line in lines)


def test_labels_count_as_overdue_only_once_the_label_delay_has_passed(tmp_path, champion_lake):
    from pipelines.core.paths import PREDICTIONS

    config = champion_lake.model_copy(update={"data_root": tmp_path})
    for day in ("2026-09-01", "2026-09-02", "2026-09-05"):
        folder = partition_dir(tmp_path, PREDICTIONS, day)
        folder.mkdir(parents=True)
        (folder / "predictions.parquet").write_bytes(b"x")
    (partition_dir(tmp_path, "labels", "2026-09-01")).mkdir(parents=True)
    (partition_dir(tmp_path, "labels", "2026-09-01") / "part-0.parquet").write_bytes(b"x")
    assert config.label_delay_partitions == 3
    assert [d.isoformat() for d in evaluation.overdue_labels(config)] == ["2026-09-02"]  # 09-05 is not due until 09-08


def test_an_accepted_night_is_an_audited_action_that_a_rerun_keeps(champion_lake, tmp_path):
    from pipelines.core.errors import PartitionQuarantinedError
    from pipelines.governance import audit
    from tests.conftest import copy_lake

    config = copy_lake(champion_lake, tmp_path)
    severity = config.validation.severity.model_copy(update={"unknown_categories": "quarantine"})
    config = config.model_copy(update={"validation": config.validation.model_copy(update={"severity": severity})})
    sample_data.break_partition(config.data_root, date(2026, 9, 11), "unknown_category")
    with pytest.raises(PartitionQuarantinedError):
        nightly.validate_partition(config, "2026-09-11", "run-1")
    validated = nightly.validate_partition(config, "2026-09-11", "run-2", accepted_by="alice")
    assert validated.warnings[0].startswith("accepted by alice: column 'loan_purpose'")
    (entry,) = [e for e in audit.read_audit(config) if e.action == "accept_quarantine"]
    assert entry.approved_by == "alice" and entry.airflow_run_id == "run-2"
    assert entry.reason.startswith("ds=2026-09-11 scored although it failed validation: column 'loan_purpose'")
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-11", model_name=entry.model, model_version=entry.to_version, rows=1, validation_success=True
        ),
    )
    assert [e.action for e in audit.read_audit(config)].count("accept_quarantine") == 1  # the rerun's row replaced
    assert audit.expected_champion(audit.read_audit(config)).action == "bootstrap"  # not an alias move
