"""The data root on an object store (moto's S3 server on loopback): partitions are read and predictions written
through pyarrow's S3 filesystem, a night there equals the same night on disk, a write is whole or absent, and the
reports reach the monitoring page through the store. The keys live only in the environment."""

import json
import shutil
from datetime import timedelta

import pytest

from harness import sample_data
from harness.topology import free_port
from pipelines.core import paths
from pipelines.core.config import load_config
from pipelines.core.errors import ConfigError, DataRootError, PartitionQuarantinedError
from pipelines.core.paths import INCOMING, LABELS, PREDICTIONS, PREDICTIONS_FILE, QUARANTINE, LakePath
from pipelines.flows import evaluation, nightly, scoring
from pipelines.governance.registry import Registry
from pipelines.steps import training
from pipelines.storage import atomic
from pipelines.storage.parquet import read_parquet
from pipelines.storage.partitions import data_files, list_partitions, partition_dir, wait_for_partition
from pipelines.surfaces.monitoring_page import read_report
from tests.conftest import DAYS, ROWS, START, copy_lake, fresh_bucket, score_night, write_config

pytestmark = pytest.mark.slow  # nights on moto's S3 server: make test-fast leaves it out

DS = (START + timedelta(days=10)).isoformat()
COMPARED = ["id", "score", "prediction", "model_version", "mlflow_run_id", "scoring_engine"]


def _keys(client, bucket, prefix=""):
    """The objects under a prefix, but the empty `folder/` markers pyarrow keeps so a folder outlives its files."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


@pytest.fixture(scope="module")
def on_disk(champion_lake, tmp_path_factory):
    """The champion's world copied (its registry and a local data root), to score the same nights on disk."""
    return copy_lake(champion_lake, tmp_path_factory.mktemp("on-disk"))


@pytest.fixture
def s3_lake(on_disk, object_store, tmp_path, monkeypatch, request):
    """The same generated days written into a fresh bucket, and a config whose data root is that bucket."""
    bucket = f"lake-{abs(hash(request.node.name)) % 10**9}"
    client = fresh_bucket(object_store, monkeypatch, bucket)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIPELINE_DATA_ROOT", f"s3://{bucket}/team-a/lake")
    path = write_config(tmp_path, mlflow={"store_dir": str(on_disk.mlflow.store_dir)})
    config = load_config(path).model_copy(update={"model": on_disk.model, "scoring": on_disk.scoring})
    sample_data.generate(config.data_root, START, DAYS, ROWS, label_delay_days=3)
    return config, client, bucket


def test_the_config_takes_an_object_store_data_root_and_publishes_reports_beside_it(s3_lake, tmp_path):
    config, _, bucket = s3_lake
    assert config.data_root == LakePath(bucket, "team-a/lake")
    assert config.monitoring.report_store == f"s3://{bucket}/team-a/lake"  # no report store named: the data root's
    assert config.work_root == tmp_path / "cache" / "nightly-ml" / bucket / "team-a" / "lake"
    assert config.history_url.startswith(f"sqlite:///{config.work_root}")
    pinned = load_config(write_config(tmp_path, work_dir="work"), environ={"PIPELINE_DATA_ROOT": f"s3://{bucket}/x"})
    assert pinned.work_root == tmp_path / "work"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://AKIA:secret@bucket/lake", "holds a credential"),
        ("s3://Bad_Bucket/lake", "valid bucket name"),
        ("s3://bucket/../elsewhere", "the prefix may hold"),
        ("gs://bucket/lake", "a folder or s3://bucket/prefix"),
    ],
)
def test_a_data_root_url_is_checked_from_the_yaml_and_the_environment(tmp_path, url, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(write_config(tmp_path, data_root=url))
    with pytest.raises(ConfigError, match=problem):
        load_config(write_config(tmp_path), environ={"PIPELINE_DATA_ROOT": url})


def test_a_night_on_the_object_store_equals_the_same_night_on_disk(s3_lake, on_disk):
    config, client, bucket = s3_lake
    assert list_partitions(config.data_root, INCOMING) == list_partitions(on_disk.data_root, INCOMING)
    assert list_partitions(config.data_root, LABELS) == list_partitions(on_disk.data_root, LABELS)
    assert training.training_partitions(config) == training.training_partitions(on_disk)
    arrived, message = wait_for_partition(config, DS)
    assert arrived and f"s3://{bucket}/team-a/lake/incoming/ds={DS}" in message
    validated, scored = score_night(config, DS, "run-s3")
    _, local = score_night(on_disk, DS, "run-disk")
    assert scored.path == f"s3://{bucket}/team-a/lake/predictions/ds={DS}/{PREDICTIONS_FILE}"
    there = read_parquet(paths.data_path(scored.path)).to_pandas().sort_values("id").reset_index(drop=True)
    here = read_parquet(paths.data_path(local.path)).to_pandas().sort_values("id").reset_index(drop=True)
    assert len(there) == ROWS and set(there["airflow_run_id"]) == {"run-s3"}
    assert there[COMPARED].equals(here[COMPARED])
    assert _keys(client, bucket, f"team-a/lake/{PREDICTIONS}/") == [
        f"team-a/lake/predictions/ds={DS}/predictions.parquet"
    ]
    # the night's reports are built in this machine's work folder and published to the store
    night = nightly.monitor_night(config, validated, scored, "run-s3")
    assert night.rows == ROWS
    shutil.rmtree(partition_dir(config.work_root, "reports", DS))
    assert b"root_metric_" in read_report(config, f"ds={DS}", "drift.html")  # Evidently's page, from the bucket
    summary = json.loads(read_report(config, f"ds={DS}", "summary.json"))
    assert summary["airflow_run_id"] == "run-s3" and summary["rows"] == ROWS
    assert not [k for k in _keys(client, bucket) if "/." in k or ".tmp-" in k]  # no temporary key is left


def test_a_sharded_night_on_the_object_store_commits_one_file_and_leaves_no_shards(s3_lake, on_disk):
    config, client, bucket = s3_lake
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"shard_rows": 700})})
    ref = Registry.open(config).champion()
    shards = scoring.plan_shards(config, DS, ref)
    assert len(shards) == 3
    done = [scoring.score_shard(config, shard, "run-sharded") for shard in shards]
    assert all(d.path.startswith(f"s3://{bucket}/team-a/lake/predictions/ds={DS}/_shards/") for d in done)
    summary = scoring.score_partition(config, DS, ref, "run-sharded", done)
    assert summary.shards == 3 and summary.rows == ROWS
    assert _keys(client, bucket, f"team-a/lake/{PREDICTIONS}/") == [
        f"team-a/lake/predictions/ds={DS}/predictions.parquet"
    ]
    whole = scoring.score_partition(on_disk, DS, Registry.open(on_disk).champion(), "run-whole")
    there = read_parquet(paths.data_path(summary.path)).to_pandas().sort_values("id").reset_index(drop=True)
    here = read_parquet(paths.data_path(whole.path)).to_pandas().sort_values("id").reset_index(drop=True)
    assert there[COMPARED].equals(here[COMPARED])


def test_a_write_that_fails_half_way_leaves_the_published_file_whole_and_a_rerun_replaces_it(s3_lake, monkeypatch):
    config, client, bucket = s3_lake
    ref = Registry.open(config).champion()
    first = scoring.score_partition(config, DS, ref, "run-1")
    before = client.get_object(Bucket=bucket, Key=f"team-a/lake/predictions/ds={DS}/predictions.parquet")["Body"]
    before = before.read()
    real = scoring.predict_scores
    calls = []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_scores", dies_on_the_second_batch)
    small = config.model_copy(update={"scoring": config.scoring.model_copy(update={"batch_rows": 500})})
    with pytest.raises(RuntimeError, match="worker lost"):
        scoring.score_partition(small, DS, ref, "run-2")
    after = client.get_object(Bucket=bucket, Key=f"team-a/lake/predictions/ds={DS}/predictions.parquet")["Body"]
    assert after.read() == before  # the reader still sees run-1's whole file
    assert _keys(client, bucket, f"team-a/lake/{PREDICTIONS}/") == [
        f"team-a/lake/predictions/ds={DS}/predictions.parquet"
    ]
    monkeypatch.setattr(scoring, "predict_scores", real)
    again = scoring.score_partition(config, DS, ref, "run-3")
    assert set(read_parquet(paths.data_path(again.path)).column("airflow_run_id").to_pylist()) == {"run-3"}
    assert first.path == again.path


def test_an_interrupted_writers_hidden_key_is_skipped_and_removed_once_it_is_old(s3_lake, monkeypatch):
    config, client, bucket = s3_lake
    folder = partition_dir(config.data_root, INCOMING, DS)
    client.put_object(Bucket=bucket, Key=f"team-a/lake/incoming/ds={DS}/.part-1.parquet.tmp-dead", Body=b"half")
    client.put_object(Bucket=bucket, Key=f"team-a/lake/incoming/ds={DS}/_SUCCESS", Body=b"")
    assert [f.name for f in data_files(folder)] == ["part-0000.parquet"]  # hidden and marker keys are not data
    with atomic.partition_write_lock(folder):  # a fresh one may be a live writer on another machine: kept
        pass
    assert f"team-a/lake/incoming/ds={DS}/.part-1.parquet.tmp-dead" in _keys(client, bucket)
    monkeypatch.setattr(atomic, "LEFTOVER_AGE_SECONDS", -60)
    with atomic.partition_write_lock(folder):
        pass
    assert f"team-a/lake/incoming/ds={DS}/.part-1.parquet.tmp-dead" not in _keys(client, bucket)
    assert f"team-a/lake/incoming/ds={DS}/_SUCCESS" in _keys(client, bucket)


def test_a_quarantined_night_is_left_out_of_training_on_every_machine(s3_lake):
    """Validation on one worker publishes the record; training on another (no local copy) still leaves it out."""
    config, client, bucket = s3_lake
    bad = START + timedelta(days=4)
    sample_data.break_partition(config.data_root, bad, "missing_column")
    with pytest.raises(PartitionQuarantinedError):
        nightly.validate_partition(config, bad.isoformat(), "run-bad")
    assert f"team-a/lake/quarantine/ds={bad}/manifest.json" in _keys(client, bucket)
    shutil.rmtree(partition_dir(config.work_root, QUARANTINE, bad))  # the other worker has no copy
    assert bad not in training.training_partitions(config, window_partitions=50)
    assert START + timedelta(days=3) in training.training_partitions(config, window_partitions=50)


def test_waiting_on_a_missing_bucket_or_an_unreachable_store_fails_with_what_to_fix(s3_lake, monkeypatch):
    config, _, _ = s3_lake
    missing = config.model_copy(update={"data_root": LakePath("no-such-bucket", "lake")})
    with pytest.raises(DataRootError, match="bucket 'no-such-bucket' does not exist"):
        wait_for_partition(missing, DS)
    arrived, message = wait_for_partition(config, (START + timedelta(days=DAYS)).isoformat())
    assert not arrived and "has not arrived yet" in message
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DataRootError, match="cannot be reached .* check AWS_ENDPOINT_URL"):
        wait_for_partition(config, DS)


def test_lake_paths_stay_under_their_root():
    root = LakePath.from_url("s3://bucket-a/team/lake")
    assert str(root / "incoming" / "ds=2026-09-01") == "s3://bucket-a/team/lake/incoming/ds=2026-09-01"
    assert (root / "incoming").parent == root and (root / "a/b").name == "b"
    assert str((root / "incoming/x").relative_to(root)) == "incoming/x"
    for escape in ("..", "../other", "a/../../b", "."):
        with pytest.raises(ValueError, match="is not a key under"):
            root / escape
    with pytest.raises(ValueError, match="is not under"):
        LakePath("bucket-b", "team/lake/x").relative_to(root)


def test_labels_on_the_object_store_are_evaluated_and_their_report_joins_the_nights(s3_lake):
    config, _, _ = s3_lake
    labelled = (START + timedelta(days=8)).isoformat()
    validated, scored = score_night(config, labelled, "run-labelled")
    nightly.monitor_night(config, validated, scored, "run-labelled")
    shutil.rmtree(partition_dir(config.work_root, "reports", labelled))  # evaluated on another machine
    done = evaluation.evaluate_labels(config)
    assert [night.ds for night in done] == [labelled] and done[0].label_coverage == 1.0
    assert b"<html" in read_report(config, f"ds={labelled}", "performance.html").lower()
    assert b"root_metric_" in read_report(config, f"ds={labelled}", "drift.html")  # the night's own reports stay
    assert evaluation.evaluate_labels(config) == []  # the same labels again: nothing to do
