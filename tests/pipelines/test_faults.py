"""Faults: kill -9 mid-scoring and mid-monitoring, a full disk, two runs of one night, a promotion racing a rollback,
the MLflow store gone during scoring and promotion. After each: no partial file visible, no temp file left after
the next run, no duplicate rows, the champion alias consistent with the audit log."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import StoreMissingError
from pipelines.flows import retraining
from pipelines.governance import audit, registry
from pipelines.governance.promotion import champion_matches_audit, promote
from pipelines.governance.registry import Registry
from pipelines.storage.partitions import partition_dir
from tests.conftest import REPO, copy_lake, score_night, score_with_champion, write_config

pytestmark = pytest.mark.slow  # kill -9 and full-disk faults in child processes: make test-fast leaves it out

BIG = "2026-09-11"
COPIES = 60  # 60 x 2,000 rows: long enough to kill mid-write with small batches


@pytest.fixture
def lake(champion_lake, tmp_path):
    config = copy_lake(champion_lake, tmp_path)
    night = pd.read_parquet(partition_dir(config.data_root, "incoming", BIG))
    big = pd.concat([night.assign(application_id=night["application_id"] + i * 10**7) for i in range(COPIES)])
    folder = partition_dir(config.data_root, "incoming", BIG)
    for old in folder.iterdir():
        old.unlink()
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), folder / "part-0000.parquet", row_group_size=8192)
    path = write_config(tmp_path, scoring={"batch_rows": 1024, "predict_chunk_rows": 256})
    return {
        "config": config.model_copy(
            update={"scoring": config.scoring.model_copy(update={"batch_rows": 1024, "predict_chunk_rows": 256})}
        ),
        "path": path,
        "rows": len(big),
    }


def _worker(lake, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fault_worker.py"), str(lake["path"]), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc, seconds=120):
    for _ in range(seconds * 20):
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the worker never reached the point to interrupt")


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def _hidden_leftovers(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")
        if folder.exists()
        else []
    )


def _check_predictions(config, rows, run_id):
    out = pd.read_parquet(partition_dir(config.data_root, "predictions", BIG))
    assert len(out) == rows and out["id"].is_unique and out["score"].notna().all()
    assert set(out["airflow_run_id"]) == {run_id}


def test_kill_9_while_scoring_leaves_no_visible_partial_file_and_the_rerun_cleans_up(lake):
    config = lake["config"]
    folder = partition_dir(config.data_root, "predictions", BIG)
    proc = _worker(lake, "score", BIG, "killed-run")
    _wait_for(lambda: any(p.stat().st_size > 100_000 for p in folder.glob(".predictions.parquet.tmp-*")), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _visible(folder) == []  # nothing half-written can be read
    assert _hidden_leftovers(folder)  # the killed writer's temp file is still there ...
    score_with_champion(config, BIG, "rerun")
    assert _hidden_leftovers(folder) == []  # ... until the next run of the night removes it
    _check_predictions(config, lake["rows"], "rerun")


def test_a_full_disk_during_the_write_keeps_the_previous_predictions(lake):
    config = lake["config"]
    score_with_champion(config, BIG, "good-run")
    folder = partition_dir(config.data_root, "predictions", BIG)
    before = (folder / "predictions.parquet").read_bytes()
    proc = _worker(lake, "score", BIG, "starved-run", str(200_000))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and ("File too large" in err or "EFBIG" in err or "error" in out), (out, err[-2000:])
    assert (folder / "predictions.parquet").read_bytes() == before
    assert _hidden_leftovers(folder) == []
    _check_predictions(config, lake["rows"], "good-run")


def test_a_disk_that_fills_up_mid_write_keeps_the_previous_predictions(lake, tmp_path):
    """A real ENOSPC: the predictions area on a tmpfs (in a private mount namespace) with room for the old file only."""
    import hashlib

    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -m needs CAP_SYS_ADMIN); the RLIMIT_FSIZE test covers it")
    config = lake["config"]
    score_with_champion(config, BIG, "good-run")
    area = config.data_root / "predictions"
    previous = area / f"ds={BIG}" / "predictions.parquet"
    shutil.copytree(area, tmp_path / "backup")
    room = previous.stat().st_size + 256 * 1024
    worker = f"{sys.executable} {REPO / 'tests' / 'fault_worker.py'} {lake['path']} score {BIG} full-disk-run"
    script = (
        f"mount -t tmpfs -o size={room} tmpfs {area} && cp -a {tmp_path / 'backup'}/. {area}/ && "
        f"{{ {worker} > {tmp_path / 'worker.out'} 2>&1; echo $? > {tmp_path / 'worker.rc'}; }}; "
        f"ls -A {area / f'ds={BIG}'} > {tmp_path / 'after.txt'}; sha256sum {previous} > {tmp_path / 'sum.txt'}"
    )
    done = subprocess.run(
        ["unshare", "-m", "bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    output = (tmp_path / "worker.out").read_text()
    assert (tmp_path / "worker.rc").read_text().strip() != "0" and "No space left on device" in output, output[-2000:]
    assert (tmp_path / "after.txt").read_text().split() == [".lock", "predictions.parquet"]  # no temp file left
    assert (tmp_path / "sum.txt").read_text().split()[0] == hashlib.sha256(previous.read_bytes()).hexdigest()


def test_two_runs_of_one_night_at_once_write_it_once(lake):
    config = lake["config"]
    procs = [_worker(lake, "score", BIG, f"run-{i}") for i in (1, 2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    out = pd.read_parquet(partition_dir(config.data_root, "predictions", BIG))
    assert len(out) == lake["rows"] and out["id"].is_unique
    assert len(set(out["airflow_run_id"])) == 1  # one run's file, whole; never a mix
    assert _hidden_leftovers(partition_dir(config.data_root, "predictions", BIG)) == []


def test_kill_9_while_monitoring_never_shows_a_mix_of_two_runs(lake):
    config = lake["config"]
    ds = "2026-09-10"
    validated, scored = score_night(config, ds, "run-a")
    from pipelines.flows.nightly import monitor_night

    monitor_night(config, validated, scored, "run-a")
    reports = partition_dir(config.data_root, "reports", ds)
    complete = _visible(reports)
    assert {"drift.html", "data_summary.html", "summary.json"} <= set(complete)
    proc = _worker(lake, "monitor", ds, "run-b", validated.model_dump_json(), scored.model_dump_json())
    _wait_for(lambda: any((p / "drift.html").exists() for p in reports.parent.glob(f".ds={ds}.staging-*")), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _visible(reports) == complete
    assert json.loads((reports / "summary.json").read_text())["airflow_run_id"] == "run-a"
    monitor_night(config, validated, scored, "run-c")
    assert json.loads((reports / "summary.json").read_text())["airflow_run_id"] == "run-c"
    assert [p.name for p in reports.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []


@pytest.fixture
def contenders(lake):
    config = lake["config"]
    candidate = retraining.train_candidate(config, retraining.select_training_window(config), {"reason": "race"})
    retraining.bootstrap_or_challenge(config, candidate, "run-2")
    return config, candidate.version


def test_a_promotion_racing_a_rollback_keeps_alias_and_audit_in_step(lake, contenders):
    config, version = contenders
    procs = [_worker(lake, "promote", version, "run-promote"), _worker(lake, "rollback", "run-rollback")]
    results = [p.communicate(timeout=300) for p in procs]
    assert procs[0].returncode == 0, results[0]
    assert procs[1].returncode in (0, 3), results[1]  # 3: nothing to roll back to yet, refused cleanly
    entries = audit.read_audit(config)  # raises if the two appends interleaved
    assert champion_matches_audit(config)
    expected = version if procs[1].returncode == 3 else entries[0].to_version
    assert Registry.open(config).champion().version == expected


def test_the_store_gone_during_a_promotion_changes_nothing(lake, contenders, tmp_path):
    config, version = contenders
    entries = audit.read_audit(config)
    database = config.mlflow.store_dir / "mlflow.db"
    database.rename(tmp_path / "away.db")
    ref = registry.ModelRef(config.model.registered_name, version, "unused")
    with pytest.raises(StoreMissingError):
        promote(config, ref, "no store", "tester", "run", None)
    assert not database.exists() and audit.read_audit(config) == entries
    (tmp_path / "away.db").rename(database)
    assert champion_matches_audit(config)
