"""The whole loop through real Airflow, with alerts to real local receivers.

Concept and covariate drift start on DRIFT_START. The monitoring opens a drift episode on its third drifted night
(one alert) and requests retraining once, when min_partitions_since_onset labelled days exist after the onset; the run
trains on the days since the onset only, the candidate beats the champion on days neither trained on, and is promoted at once
(require_approval false). The next night is scored by the new version; a rollback brings the old one back.
"""

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.contracts import Alias
from pipelines.governance import registry
from pipelines.governance.audit import read_audit
from pipelines.governance.registry import Registry
from pipelines.storage.partitions import partition_dir
from tests.alert_receivers import AlertReceivers
from tests.conftest import REPO, airflow_env, airflow_home, write_config

pytestmark = pytest.mark.e2e

START, BOOTSTRAP_END, DRIFT_START = date(2026, 9, 1), "2026-09-08", date(2026, 9, 14)
FIRST, LAST, BAD = date(2026, 9, 12), date(2026, 9, 21), date(2026, 9, 13)
ROWS = 3000


@pytest.fixture(scope="module")
def loop(tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("loop")
    with AlertReceivers() as receivers:
        config_path = write_config(
            folder,
            training={"holdout_partitions": 2, "min_partitions_since_onset": 4, "window": "since_drift_onset"},
            alerts=AlertReceivers.config,
        )
        config = load_config(config_path)
        drift = sample_data.DriftSpec(start=DRIFT_START, covariate=True, concept=True)
        days = (LAST - START).days + 1
        sample_data.generate(
            config.data_root, START, days, ROWS, label_delay_days=3, as_of=date(2026, 9, 11), drift=drift
        )
        sample_data.break_partition(config.data_root, BAD, "missing_column")
        registry.init_store(config)
        env = airflow_env(airflow_home(airflow_db, folder / "airflow"), config_path) | receivers.env
        run = lambda args: subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500, cwd=REPO)  # noqa: E731
        drive = run(
            [
                sys.executable,
                str(Path(__file__).parent / "drive_loop.py"),
                str(folder),
                BOOTSTRAP_END,
                FIRST.isoformat(),
                LAST.isoformat(),
                str(ROWS),
                DRIFT_START.isoformat(),
            ]
        )
        assert drive.returncode == 0, (drive.stdout + drive.stderr)[-5000:]
        outcomes = json.loads((folder / "outcomes.json").read_text())
        yield {
            "config": config,
            "outcomes": outcomes,
            "mail": list(receivers.mail),
            "posts": list(receivers.posts),
            "log": drive.stdout + drive.stderr,
        }


def _retrains(outcomes):
    return {k.split()[-1]: v for k, v in outcomes.items() if k.startswith("retrain after")}


def test_drift_opens_one_episode_on_the_third_drifted_night(loop):
    decisions = {
        k: v["returns"]["finish"] for k, v in loop["outcomes"].items() if k[:4] == "2026" and "finish" in v["returns"]
    }
    assert [d for d, fired in sorted(decisions.items()) if fired["retrain"]][0] == "2026-09-16"
    assert not any(fired["retrain"] for d, fired in decisions.items() if d < "2026-09-16")
    assert "drift" in " ".join(decisions["2026-09-16"]["reasons"])
    assert [d for d, fired in sorted(decisions.items()) if fired["alert"] == "opened"] == ["2026-09-16"]
    episode = decisions["2026-09-16"]["episode"]
    assert episode["onset"] == DRIFT_START.isoformat() and episode["opened_ds"] == "2026-09-16"
    # the night says when retraining runs: 4 labelled partitions since the onset, labels 3 partitions late
    assert "after the partition of 2026-09-20" in decisions["2026-09-16"]["outcome"]


def test_retraining_is_requested_once_when_the_labels_since_the_onset_exist(loop):
    outcomes = loop["outcomes"]
    assert list(_retrains(outcomes)) == ["2026-09-20"]  # one run that trains, not four that skip first
    for night in ("2026-09-16", "2026-09-17", "2026-09-18", "2026-09-19"):
        states = outcomes[night]["task_states"]
        assert states["hold_retraining"] == "success" and states["request_retraining"] == "skipped", night
        assert "waiting for labelled data" in outcomes[night]["returns"]["finish"]["outcome"]
    states = outcomes["2026-09-20"]["task_states"]
    assert states["request_retraining"] == "success" and states["hold_retraining"] == "skipped"
    assert outcomes["2026-09-20"]["returns"]["finish"]["alert"] is None  # the episode alerted when it opened


def test_the_candidate_trained_since_the_onset_wins_and_is_promoted(loop):
    config, outcomes = loop["config"], loop["outcomes"]
    boot = outcomes["bootstrap"]["returns"]["train_candidate"]
    winner = _retrains(outcomes)["2026-09-20"]
    assert winner["state"] == "success", winner["task_states"]
    window = winner["returns"]["select_training_window"]
    assert window["mode"] == "since_drift_onset" and window["onset"] == DRIFT_START.isoformat()
    assert window["days"] == ["2026-09-14", "2026-09-15", "2026-09-16", "2026-09-17"]
    candidate = winner["returns"]["train_candidate"]
    assert candidate["train_days"] == ["2026-09-14", "2026-09-15"]
    gate = winner["returns"]["evaluate_gate"]
    assert gate["passed"] and gate["evaluation_days"] == ["2026-09-16", "2026-09-17"]
    assert gate["comparison"]["ci_low"] > 0, gate["comparison"]  # better beyond the bootstrap noise
    assert winner["task_states"]["promote_candidate"] == "success"
    assert winner["task_states"]["reject_candidate"] == "skipped"
    entry = winner["returns"]["promote_candidate"]
    assert (entry["from_version"], entry["to_version"]) == (boot["version"], candidate["version"])
    assert (
        entry["reason"].startswith("gate passed (roc_auc +0.")
        and "retrained because: 2026-09-20: drift share" in entry["reason"]
    )
    tags = MlflowClient(config.tracking_uri).get_model_version(candidate["name"], candidate["version"]).tags
    assert tags["training.window"] == "since_drift_onset from the drift onset 2026-09-14"
    assert tags["reason"].startswith("2026-09-20: ") and tags["airflow_run_id"] == winner["run_id"]
    assert tags["gate.passed"] == "true"


def test_the_next_night_is_scored_by_the_new_champion(loop):
    outcomes = loop["outcomes"]
    new = _retrains(outcomes)["2026-09-20"]["returns"]["train_candidate"]["version"]
    assert outcomes[LAST.isoformat()]["returns"]["score_partition"]["model_version"] == new
    assert outcomes["last_night_versions"] == [new]
    assert outcomes["2026-09-20"]["returns"]["score_partition"]["model_version"] != new


def test_rollback_restores_the_previous_champion_audited(loop):
    config, outcomes = loop["config"], loop["outcomes"]
    boot = outcomes["bootstrap"]["returns"]["train_candidate"]["version"]
    new = _retrains(outcomes)["2026-09-20"]["returns"]["train_candidate"]["version"]
    assert outcomes["rollback_bad"]["state"] == "failed"
    assert outcomes["rollback"]["state"] == "success"
    assert Registry.open(config).champion().version == boot
    assert Registry.open(config).alias_version(Alias.PREVIOUS).version == new
    actions = [(e.action, e.from_version, e.to_version) for e in read_audit(config)]
    assert actions == [("bootstrap", None, boot), ("promote", boot, new), ("rollback", new, boot)]
    assert read_audit(config)[-1].reason == "loop test: undo the promotion"
    rerun = pd.read_parquet(partition_dir(config.data_root, "predictions", LAST))
    assert set(rerun["model_version"]) == {boot}
    # v1 drifts again: a new episode alerts, but an operator's rollback is not undone by an automatic retraining
    after = outcomes["rerun_after_rollback"]["returns"]["finish"]
    assert after["alert"] == "opened" and not after["request"] and "set by a rollback" in after["outcome"]
    assert outcomes["rerun_after_rollback"]["task_states"]["request_retraining"] == "skipped"


def _alerts(loop, event):
    mails = [m for m in loop["mail"] if m["event"] == event]
    posts = [
        p["json"] for p in loop["posts"] if any(m["subject"] == p["json"]["blocks"][0]["text"]["text"] for m in mails)
    ]
    return mails, posts


@pytest.mark.parametrize(
    ("event", "count", "subject", "body", "link"),
    [
        (
            "quarantine",
            1,
            "partition ds=2026-09-13 quarantined (3,000 rows not scored)",
            "required column",
            "https://airflow.example.test/dags/batch_scoring/runs/",
        ),
        # one per episode: the drift found on 16 (promoted away on 20), and the drift v1 shows again when the
        # rollback brings it back for the rerun of 21; none for the held nights 17-20 nor for 21 scored by v2
        (
            "retrain_decision",
            2,
            "episode 1 opened after ds=2026-09-16",
            "drift share",
            "https://airflow.example.test/monitoring/reports/ds=2026-09-16/drift_overview.html",
        ),
        (
            "promotion",
            1,
            "promoted to champion (was v1)",
            "95% CI",
            "https://airflow.example.test/monitoring/models/v2_vs_v1/gate.html",
        ),
        (
            "rollback",
            1,
            "rolled back: champion is v1 again (was v2)",
            "loop test: undo the promotion",
            "https://airflow.example.test/dags/rollback_model/runs/",
        ),
        (
            "task_failure",
            1,
            "rollback_model.rollback failed",
            "has no version",
            "https://airflow.example.test/dags/rollback_model/runs/",
        ),
    ],
)
def test_alerts_arrive_by_email_and_webhook(loop, event, count, subject, body, link):
    mails, posts = _alerts(loop, event)
    assert len(mails) == count and len(posts) == count, [m["subject"] for m in loop["mail"]]
    assert subject in mails[0]["subject"]
    assert mails[0]["to"] == ["ml-oncall@example.test"] and mails[0]["from"] == "airflow@example.test"
    assert body in mails[0]["body"] and link in mails[0]["body"]
    assert body in posts[0]["text"] and link in posts[0]["text"]
    assert link in json.dumps(posts[0]["blocks"])
    if event == "retrain_decision":
        assert all("champion v1 may no longer hold" in m["subject"] for m in mails)
        assert "episode 2 opened after ds=2026-09-21" in mails[1]["subject"]
        assert "https://airflow.example.test/monitoring/#episode-1" in mails[0]["body"]
    if event == "promotion":
        fetched = loop["config"].data_root / "reports" / "models" / "v2_vs_v1" / "candidate.html"
        assert fetched.is_file()  # the link points at a report that exists


def test_webhook_posts_are_slack_incoming_webhook_requests(loop):
    assert loop["posts"] and all(p["path"] == "/T000/B000/alerts" for p in loop["posts"])
    assert all(p["content_type"].startswith("application/json") for p in loop["posts"])
    assert all(p["json"]["blocks"][0]["type"] == "header" for p in loop["posts"])
