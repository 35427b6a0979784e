"""End to end through real Airflow: bootstrap a champion, score nights, quarantine bad partitions, rerun safely."""

import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.governance import registry
from pipelines.governance.registry import Registry
from pipelines.storage.partitions import partition_dir
from tests.alert_receivers import LineageReceiver
from tests.conftest import REPO, airflow_env, airflow_home, write_config

pytestmark = pytest.mark.e2e

FIRST, LAST = date(2026, 9, 11), date(2026, 9, 16)
TRUNCATED, NO_COLUMN = date(2026, 9, 13), date(2026, 9, 14)
GOOD_NIGHTS = [d for d in pd.date_range(FIRST, LAST).date if d not in (TRUNCATED, NO_COLUMN)]


def _run(args, env, timeout=900):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("e2e")
    config_path = write_config(folder, scoring={"engine": "auto"})  # the default engine: compiled trees when verified
    config = load_config(config_path)
    sample_data.generate(config.data_root, date(2026, 9, 1), 16, 2000, label_delay_days=3)
    sample_data.break_partition(config.data_root, TRUNCATED, "truncated")
    sample_data.break_partition(config.data_root, NO_COLUMN, "missing_column")
    registry.init_store(config)
    env = airflow_env(airflow_home(airflow_db, folder / "airflow"), config_path)
    with LineageReceiver() as lineage:  # the runs also send their OpenLineage events to a local endpoint
        drive = _run(
            [
                sys.executable,
                str(Path(__file__).parent / "drive_nights.py"),
                str(folder),
                "2026-09-10",
                FIRST.isoformat(),
                LAST.isoformat(),
            ],
            env | lineage.env,
        )
    assert drive.returncode == 0, (drive.stdout + drive.stderr)[-5000:]
    outcomes = json.loads((folder / "outcomes.json").read_text())
    return {
        "folder": folder,
        "config": config,
        "env": env,
        "outcomes": outcomes,
        "log": drive.stdout + drive.stderr,
        "lineage": lineage.events,
    }


def test_bootstrap_made_the_first_champion(world):
    boot = world["outcomes"]["bootstrap"]
    assert boot["state"] == "success"
    assert boot["returns"]["bootstrap_or_challenge"] == "champion"
    ref = Registry.open(world["config"]).champion()
    assert ref.version == boot["returns"]["train_candidate"]["version"]
    tags = MlflowClient(world["config"].tracking_uri).get_model_version(ref.name, ref.version).tags
    assert tags["airflow_run_id"] == boot["run_id"]


def test_every_valid_row_has_exactly_one_prediction_with_lineage(world):
    config, outcomes = world["config"], world["outcomes"]
    client = MlflowClient(config.tracking_uri)
    for night in GOOD_NIGHTS:
        outcome = outcomes[night.isoformat()]
        assert outcome["state"] == "success", outcome["task_states"]
        incoming = pd.read_parquet(partition_dir(config.data_root, "incoming", night))
        predictions = pd.read_parquet(partition_dir(config.data_root, "predictions", night))
        assert predictions["id"].is_unique
        assert sorted(predictions["id"]) == sorted(incoming["application_id"])
        (version,) = set(predictions["model_version"])
        assert set(predictions["mlflow_run_id"]) == {
            client.get_model_version(config.model.registered_name, version).run_id
        }
        if night in (FIRST, LAST, date(2026, 9, 15)):  # rerun by hand afterwards
            continue
        assert version == outcomes["bootstrap"]["returns"]["train_candidate"]["version"]
        assert set(predictions["airflow_run_id"]) == {outcome["run_id"]}
        assert outcome["returns"]["score_partition"]["rows"] == len(incoming)


def test_nights_are_scored_by_the_verified_compiled_trees_and_say_so(world):
    """The default engine: the version compiled at registration, verified, scores every row it can score exactly."""
    from pipelines.storage import history

    config, outcomes = world["config"], world["outcomes"]
    boot = outcomes["bootstrap"]["returns"]["train_candidate"]["version"]
    tags = MlflowClient(config.tracking_uri).get_model_version(config.model.registered_name, boot).tags
    assert tags["scoring.compiled"] == "yes"
    recorded = history.read_history(config).set_index("ds")
    night = GOOD_NIGHTS[1]
    scored = outcomes[night.isoformat()]["returns"]["score_partition"]
    assert scored["engine"] == "compiled" and scored["engine_reason"] == ""
    predictions = pd.read_parquet(partition_dir(config.data_root, "predictions", night))
    by_engine = predictions["scoring_engine"].astype(str).value_counts().to_dict()
    assert by_engine == {k: v for k, v in scored["engine_rows"].items() if v}
    assert by_engine.get("compiled", 0) > 0.5 * len(predictions)
    row = recorded.loc[night.isoformat()]
    assert row["scoring_engine"] == "compiled" and row["scoring_engine_rows"] == scored["engine_rows"]
    assert set(row["task_seconds"]) >= {"validate_partition", "score_partition", "monitor_night", "decide_retraining"}


def test_the_data_interval_picks_the_partition(world):
    for night in GOOD_NIGHTS:
        assert world["outcomes"][night.isoformat()]["returns"]["partition_date"] == night.isoformat()


@pytest.mark.parametrize(
    ("night", "reason"),
    [(TRUNCATED, "is not readable Parquet"), (NO_COLUMN, "required column 'annual_income' is missing in file")],
)
def test_bad_partitions_are_quarantined_and_not_scored(world, night, reason):
    config, outcome = world["config"], world["outcomes"][night.isoformat()]
    assert outcome["state"] == "failed"
    assert outcome["task_states"]["validate_partition"] == "failed"
    assert outcome["task_states"]["score_partition"] == "upstream_failed"
    record = json.loads((partition_dir(config.data_root, "quarantine", night) / "validation.json").read_text())
    assert reason in record["reason"]
    assert not partition_dir(config.data_root, "predictions", night).exists()
    assert reason in world["log"]


def test_rerunning_a_night_replaces_it_without_duplicates(world):
    config = world["config"]
    rerun = world["outcomes"]["rerun"]
    assert rerun["state"] == "success"
    first = pd.read_parquet(world["folder"] / "first_run_predictions").sort_values("id", ignore_index=True)
    second = pd.read_parquet(partition_dir(config.data_root, "predictions", FIRST)).sort_values("id", ignore_index=True)
    assert len(second) == len(first) and second["id"].is_unique
    pd.testing.assert_frame_equal(first[["id", "score", "prediction"]], second[["id", "score", "prediction"]])
    assert set(second["airflow_run_id"]) == {rerun["run_id"]}
    assert sorted(p.name for p in partition_dir(config.data_root, "predictions", FIRST).iterdir()) == [
        ".lock",
        "predictions.parquet",
    ]


def test_the_in_process_runner_never_replaces_a_run(world):
    outcomes = world["outcomes"]
    assert outcomes["beside_queued"]["state"] == "success"
    assert outcomes["queued_run_id"] in outcomes["runs"]  # the REST-queued run is still there
    assert outcomes["same_logical_date"].startswith("batch_scoring already has a run for logical date")
    assert "never replaces a run" in outcomes["same_logical_date"]


def test_every_night_is_in_the_monitoring_history_with_reports(world):
    from pipelines.storage import history

    first = world["outcomes"]["bootstrap"]["returns"]["train_candidate"]["version"]
    full = history.read_history(world["config"])
    frame = full[full["model_version"] == first].set_index("ds")  # a night rescored by a new champion has a second row
    for night in GOOD_NIGHTS:
        row = frame.loc[night.isoformat()]
        assert row["validation_success"] and row["rows"] == 2000
        assert row["drift_share"] == 0.0
        assert {"validate_partition", "score_partition", "monitor_night", "decide_retraining"} <= set(
            row["task_seconds"]
        )
        assert row["decision"] == "keep" or night == LAST
        for key in ("drift_html", "data_summary_html"):
            assert Path(row["reports"][key]).is_file()
    for night in (TRUNCATED, NO_COLUMN):
        row = frame.loc[night.isoformat()]
        assert not row["validation_success"] and row["validation_failures"]
    # labels arrive 3 days late: the first nights were evaluated by later runs
    assert frame.loc[FIRST.isoformat(), "label_coverage"] == 1.0
    assert (
        abs(frame.loc[FIRST.isoformat(), "realised_roc_auc"] - frame.loc[FIRST.isoformat(), "estimated_roc_auc"]) < 0.06
    )


def test_both_branch_paths_reach_the_finish(world):
    keep = world["outcomes"][GOOD_NIGHTS[1].isoformat()]["task_states"]
    assert keep["keep_champion"] == "success" and keep["request_retraining"] == "skipped"
    assert keep["finish"] == "success"
    forced = world["outcomes"]["forced"]
    assert forced["state"] == "success"
    states = forced["task_states"]
    assert states["request_retraining"] == "success" and states["keep_champion"] == "skipped"
    assert states["finish"] == "success"
    assert forced["returns"]["finish"]["reasons"] == ["force_retrain was set on the run"]


def test_a_positive_decision_emits_the_retraining_asset_event(world):
    events = world["outcomes"]["asset_events"]
    assert len(events) == 1
    assert events[0]["asset"] == world["config"].retrain_asset_name
    assert events[0]["extra"]["ds"] == LAST.isoformat()
    assert events[0]["extra"]["reasons"] == ["force_retrain was set on the run"]
    assert events[0]["source_run_id"] == world["outcomes"]["forced"]["run_id"]


def test_progress_is_in_the_task_log(world):
    assert "scored 2,000 / 2,000 rows (100%)" in world["log"]
    assert "rows/s" in world["log"]


def test_airflow_dags_test_cli_scores_a_night(world):
    out = _run(
        [sys.executable, "-m", "airflow", "dags", "test", "batch_scoring", "-c", '{"ds": "2026-09-12"}'], world["env"]
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    predictions = pd.read_parquet(partition_dir(world["config"].data_root, "predictions", "2026-09-12"))
    assert predictions["id"].is_unique and len(predictions) == 2000


def test_a_partition_that_never_arrives_fails_after_the_wait(world):
    config_path = write_config(
        world["folder"], "short-wait.yaml", partition_wait={"timeout_minutes": 0.05, "poke_interval_seconds": 1}
    )
    assert load_config(config_path).data_root == world["config"].data_root
    env = dict(world["env"], PIPELINE_CONFIG=str(config_path))
    out = _run([sys.executable, "-m", "airflow", "dags", "test", "batch_scoring", "-c", '{"ds": "2026-09-30"}'], env)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert "ds=2026-09-30 has not arrived yet" in log
    # the failure itself names the folder (not only the pokes before it)
    assert re.search(
        r"AirflowSensorTimeout: gave up after waiting \d+ minutes \(partition_wait.timeout_minutes 0.05\): "
        r"partition \S+/incoming/ds=2026-09-30 has not arrived yet",
        log,
    ), log[-3000:]
    assert not partition_dir(world["config"].data_root, "predictions", "2026-09-30").exists()


def test_no_champion_fails_with_instructions(tmp_path, airflow_db):
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    sample_data.generate(config.data_root, date(2026, 9, 1), 1, 500, label_delay_days=3)
    env = airflow_env(airflow_home(airflow_db, tmp_path / "airflow"), config_path)
    out = _run([sys.executable, "-m", "airflow", "dags", "test", "batch_scoring", "-c", '{"ds": "2026-09-01"}'], env)
    assert out.returncode != 0
    assert "run the retrain_model DAG" in out.stdout + out.stderr


def test_monitor_and_gate_tasks_link_to_their_reports(world):
    night = GOOD_NIGHTS[1].isoformat()
    script = f"""
import sys
sys.path.insert(0, {str(REPO / "plugins")!r})
from airflow.models.taskinstancekey import TaskInstanceKey
from model_monitoring import DriftReportLink, GateComparisonLink
key = TaskInstanceKey("batch_scoring", "monitor_night", {world["outcomes"][night]["run_id"]!r}, 1, -1)
other = TaskInstanceKey("batch_scoring", "score_partition", {world["outcomes"][night]["run_id"]!r}, 1, -1)
gate = TaskInstanceKey("retrain_model", "evaluate_gate", {world["outcomes"]["retrain"]["run_id"]!r}, 1, -1)
boot = TaskInstanceKey("retrain_model", "evaluate_gate", {world["outcomes"]["bootstrap"]["run_id"]!r}, 1, -1)
print("LINK" + DriftReportLink().get_link(None, ti_key=key) + "|" + DriftReportLink().get_link(None, ti_key=other))
print("GATE" + GateComparisonLink().get_link(None, ti_key=gate) + "|" + GateComparisonLink().get_link(None, ti_key=boot))
"""
    out = _run([sys.executable, "-c", script], world["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("LINK"))
    assert line == f"LINK/monitoring/reports/ds={night}/drift_overview.html|"
    gate = world["outcomes"]["retrain"]["returns"]["evaluate_gate"]
    line = next(x for x in out.stdout.splitlines() if x.startswith("GATE"))
    assert line == f"GATE/monitoring/models/v{gate['candidate']}_vs_v{gate['champion']}/gate.html|"


def test_retraining_goes_through_the_gate_and_the_audit_log(world):
    from pipelines.governance.audit import read_audit

    config, outcomes = world["config"], world["outcomes"]
    retrain = outcomes["retrain"]
    assert retrain["state"] == "success", retrain["task_states"]
    gate = retrain["returns"]["evaluate_gate"]
    candidate = retrain["returns"]["train_candidate"]["version"]
    first = outcomes["bootstrap"]["returns"]["train_candidate"]["version"]
    assert gate["champion"] == first and gate["candidate"] == candidate
    assert gate["comparison"]["ci_low"] <= gate["comparison"]["difference"] <= gate["comparison"]["ci_high"]
    actions = [(e.action, e.to_version) for e in read_audit(config)]
    assert actions[0] == ("bootstrap", first)
    after = pd.read_parquet(partition_dir(config.data_root, "predictions", "2026-09-15"))
    if gate["passed"]:
        assert retrain["task_states"]["promote_candidate"] == "success"
        assert retrain["task_states"]["reject_candidate"] == "skipped"
        assert ("promote", candidate) in actions
        assert set(after["model_version"]) == {candidate}  # the next night is scored by the new champion
    else:
        assert retrain["task_states"]["reject_candidate"] == "success"
        assert retrain["task_states"]["promote_candidate"] == "skipped"
        assert ("reject", candidate) in actions
        assert set(after["model_version"]) == {first}


def test_rollback_refuses_bad_targets_and_restores_the_previous_champion(world):
    from pipelines.governance.audit import read_audit

    config, outcomes = world["config"], world["outcomes"]
    assert outcomes["rollback_bad"]["state"] == "failed"
    assert "has no version '99'" in world["log"]
    first = outcomes["bootstrap"]["returns"]["train_candidate"]["version"]
    if outcomes["retrain"]["returns"]["evaluate_gate"]["passed"]:
        assert outcomes["rollback"]["state"] == "success"
        assert read_audit(config)[-1].action == "rollback"
        assert read_audit(config)[-1].to_version == first
    else:
        assert outcomes["rollback"]["state"] == "failed"
        assert "no 'previous' champion" in world["log"]
    assert Registry.open(config).champion().version == first
    after = pd.read_parquet(partition_dir(config.data_root, "predictions", "2026-09-16"))
    assert set(after["model_version"]) == {first}


def _lineage(world, job_suffix: str, event_type: str = "COMPLETE") -> list[dict]:
    return [
        e
        for e in world["lineage"]
        if e.get("eventType") == event_type and e.get("job", {}).get("name", "").endswith(job_suffix)
    ]


def test_scoring_and_training_emit_openlineage_events_with_their_inputs_and_outputs(world):
    config, outcomes = world["config"], world["outcomes"]
    night = GOOD_NIGHTS[0].isoformat()
    scored = outcomes[night]["returns"]["score_partition"]
    events = [e for e in _lineage(world, "batch_scoring.score_partition") if e["run"]["facets"]]
    assert events, sorted({e.get("job", {}).get("name") for e in world["lineage"]})
    by_night = {}
    for event in events:
        for dataset in event["inputs"]:
            if "/incoming/ds=" in dataset["name"]:
                by_night[dataset["name"].rsplit("ds=", 1)[1]] = event
    event = by_night[night]
    inputs = {(d["namespace"], d["name"]) for d in event["inputs"]}
    assert ("file", str(partition_dir(config.data_root, "incoming", night))) in inputs
    model = f"{config.tracking_uri}/models/{scored['model_name']}/{scored['model_version']}"
    assert ("mlflow", model) in inputs
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
        ("file", str(partition_dir(config.data_root, "predictions", night)))
    ]
    trained = _lineage(world, "retrain_model.train_candidate")
    candidate = outcomes["bootstrap"]["returns"]["train_candidate"]
    assert trained and [(d["namespace"], d["name"]) for d in trained[0]["outputs"]] == [
        ("mlflow", f"{config.tracking_uri}/models/{candidate['name']}/{candidate['version']}")
    ]
    labelled = {d["name"] for d in trained[0]["inputs"]}
    assert str(partition_dir(config.data_root, "labels", candidate["train_days"][0])) in labelled
    # the START events of the same tasks exist too (the provider's own, with the run's facets)
    assert _lineage(world, "batch_scoring.score_partition", "START")


def test_each_run_carries_its_partition_its_real_duration_and_its_task_logs_for_the_ui(world):
    import sqlite3

    home = world["folder"] / "airflow"
    night = GOOD_NIGHTS[0].isoformat()
    run_id = world["outcomes"][night]["run_id"]
    with sqlite3.connect(home / "airflow.db") as db:
        note = db.execute(
            "SELECT n.content FROM dag_run_note n JOIN dag_run r ON r.id = n.dag_run_id "
            "WHERE r.dag_id = 'batch_scoring' AND r.run_id = ?",
            (run_id,),
        ).fetchone()
        started, ended = db.execute(
            "SELECT start_date, end_date FROM dag_run WHERE dag_id = 'batch_scoring' AND run_id = ?", (run_id,)
        ).fetchone()
    assert note == (f"partition ds={night}",)  # the night the run scored, shown on the run in the UI
    duration = pd.Timestamp(ended) - pd.Timestamp(started)
    assert pd.Timedelta(0) < duration < pd.Timedelta(minutes=30)  # not the weeks since the logical date
    logs = list((home / "logs" / "dag_id=batch_scoring" / f"run_id={run_id}").glob("task_id=score_partition/*.log"))
    assert len(logs) == 1, logs  # where the api-server reads a finished task's log
    lines = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert any("rows/s" in line["event"] for line in lines) and all(
        {"timestamp", "level"} <= set(line) for line in lines
    )
    assert not any("deprecated" in line["event"] for line in lines)  # no library flood
