"""Datasets shaped unlike the demo, through real Airflow: weekly and yearly cadence, a few hundred rows a partition
of varying size, features of every column type (bool, integer, float with nulls, text, dictionary-encoded text,
date, timestamp), range drift that is not corruption, and a concept break.

Weekly: the champion is bootstrapped on partitions 0-7. Partition 9 is too small (quarantined: broken), then an
operator accepts it. From partition 10 spend moves beyond anything seen in training and a new plan appears (scored
with data-quality warnings, not quarantined), and churn's relationship to the features breaks. The drift opens an
episode, which requests retraining once enough labelled partitions exist since the onset (every run it starts
trains); the candidate is promoted through the gate, and realised ROC AUC recovers.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness import example_data
from pipelines.core.config import load_config
from pipelines.core.paths import PREDICTIONS, QUARANTINE, REPORTS
from pipelines.governance.audit import read_audit
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir
from tests.alert_receivers import AlertReceivers
from tests.conftest import REPO, airflow_env, airflow_home

pytestmark = pytest.mark.e2e

WEEKLY = {
    "first": "2021-01-04",
    "partitions": 17,
    "rows": 400,
    "bootstrap_end": 7,
    "first_night": 8,
    "tiny": 9,
    "shift_at": 10,
    "break_at": 10,
}
YEARLY = {"first": "2001-01-01", "partitions": 10, "rows": 300, "bootstrap_end": 6, "first_night": 7, "shift_at": 8}


def _drive(
    airflow_db: Path,
    folder: Path,
    cadence: str,
    scenario: dict,
    receivers: AlertReceivers | None = None,
    **overrides,
) -> dict:
    raw = example_data.example_config(str(folder / "data"), str(folder / "mlflow"), cadence)
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    if receivers is not None:
        raw["alerts"] = AlertReceivers.config
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = airflow_env(airflow_home(airflow_db, folder / "airflow"), path) | (receivers.env if receivers else {})
    run = lambda args: subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500, cwd=REPO)  # noqa: E731
    drive = run([sys.executable, str(Path(__file__).parent / "drive_datasets.py"), str(folder), json.dumps(scenario)])
    assert drive.returncode == 0, (drive.stdout + drive.stderr)[-5000:]
    outcomes = json.loads((folder / "outcomes.json").read_text())
    return {
        "config": load_config(path),
        "outcomes": outcomes,
        "dates": outcomes["dates"],
        "log": drive.stdout + drive.stderr,
    }


@pytest.fixture(scope="module")
def weekly(tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("weekly")
    with AlertReceivers() as receivers:
        result = _drive(airflow_db, folder, "weekly", WEEKLY, receivers)
        result["mail"] = list(receivers.mail)
    return result


def _night(weekly, index):
    return weekly["outcomes"][weekly["dates"][index]]


def test_every_column_type_is_scored_end_to_end(weekly):
    night = _night(weekly, 8)
    assert night["state"] == "success", night["task_states"]
    ds = weekly["dates"][8]
    predictions = pd.read_parquet(partition_dir(weekly["config"].data_root, PREDICTIONS, ds))
    assert len(predictions) == night["returns"]["score_partition"]["rows"] > 0
    assert predictions["score"].between(0, 1).all()
    for report in ("drift.html", "data_summary.html", "validation.html"):
        assert (partition_dir(weekly["config"].data_root, REPORTS, ds) / report).is_file()
    drift = history.read_history(weekly["config"]).set_index("ds").loc[ds, "drift_stats"]
    assert set(example_data.NUMERIC + example_data.CATEGORICAL) <= set(drift)  # bool, date, timestamp... all monitored


def test_schedule_follows_the_weekly_cadence(weekly):
    night = _night(weekly, 8)
    assert night["returns"]["partition_date"] == weekly["dates"][8]  # from the data interval of a weekly tick


def test_broken_data_is_still_quarantined_with_its_reason_and_can_be_accepted(weekly):
    ds = weekly["dates"][9]
    refused = weekly["outcomes"][ds]
    assert refused["task_states"]["validate_partition"] == "failed"
    assert refused["task_states"]["score_partition"] == "upstream_failed"
    quarantine_mail = [m for m in weekly["mail"] if m["event"] == "quarantine"]
    assert any("expected at least 50 rows (validation.min_rows), found 30" in m["body"] for m in quarantine_mail)
    accepted = weekly["outcomes"][f"accept {ds}"]
    assert accepted["state"] == "success", accepted["task_states"]
    warnings = accepted["returns"]["validate_partition"]["warnings"]
    assert any(w.startswith("accepted by") and "found 30" in w for w in warnings)
    assert not partition_dir(weekly["config"].data_root, QUARANTINE, ds).exists()  # usable for training now


def test_shifted_data_is_scored_with_warnings_not_quarantined(weekly):
    frame = history.read_history(weekly["config"])
    for index in range(10, 14):
        ds = weekly["dates"][index]
        assert weekly["outcomes"][ds]["task_states"]["score_partition"] == "success", ds
        row = frame[(frame["ds"] == ds)].iloc[0]
        assert row["validation_success"]
        text = " ".join(row["validation_warnings"])
        assert "'monthly_spend'" in text and "outside the expected range [" in text and "found min" in text
        assert "'plan'" in text and "unseen in training" in text and "'family'" in text
    dq = [m for m in weekly["mail"] if m["event"] == "data_quality"]
    assert dq and "validation report" in dq[0]["body"]


def test_the_break_is_detected_waited_for_retrained_and_recovered(weekly):
    outcomes, dates = weekly["outcomes"], weekly["dates"]
    retrains = {k.split()[-1]: v for k, v in outcomes.items() if k.startswith("retrain after")}
    assert retrains, "the drift never asked for retraining"
    assert min(retrains) >= dates[10]
    # the episode waits for labelled partitions since the onset; a run whose usable labels fall short of what the
    # files promised skips once and the episode waits a partition more: at most 2 runs train
    assert all(v["state"] == "success" for v in retrains.values())
    trained = [d for d, v in retrains.items() if v["task_states"].get("train_candidate") == "success"]
    assert 1 <= len(trained) <= 2 and len(retrains) <= 3, {d: v["task_states"] for d, v in retrains.items()}
    promotions = [e for e in read_audit(weekly["config"]) if e.action == "promote"]
    assert len(promotions) == 1, promotions
    assert "95% CI" in promotions[0].reason
    frame = history.read_history(weekly["config"]).dropna(subset=["realised_roc_auc"])
    old = frame[(frame["model_version"] == "1") & (frame["ds"] >= dates[10])]["realised_roc_auc"]
    new = frame[frame["model_version"] == promotions[0].to_version]["realised_roc_auc"]
    assert len(old) and len(new), frame[["ds", "model_version", "realised_roc_auc"]]
    assert old.max() < 0.5 < 0.65 < new.min()  # the old model inverted by the break; the new one recovered
    failures = [m for m in weekly["mail"] if m["event"] == "task_failure"]
    assert [m["subject"] for m in failures] == [], "only the quarantine fails a task"


def test_yearly_partitions_score_monitor_and_age_in_years(tmp_path, airflow_db):
    yearly = _drive(airflow_db, tmp_path, "yearly", YEARLY)
    outcomes, dates = yearly["outcomes"], yearly["dates"]
    assert dates[:3] == ["2001-01-01", "2002-01-01", "2003-01-01"]
    assert outcomes["bootstrap"]["state"] == "success"
    for ds in dates[7:]:
        night = outcomes[ds]
        assert night["state"] == "success" and night["returns"]["partition_date"] == ds, night["task_states"]
        reasons = " ".join(night["returns"]["finish"]["reasons"])
        assert "partitions (years)" not in reasons  # a model trained on 2006 is 1-3 years old: under 52
    frame = history.read_history(yearly["config"]).set_index("ds")
    assert not frame.loc[dates[8], "drift_stats"]["monthly_spend"]["threshold"] == 0.1  # calibrated to ~300 rows
    assert frame.loc[dates[8], "validation_warnings"]  # shifted spend: a warning, not a quarantine
