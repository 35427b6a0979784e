"""Sharded scoring: a large partition is planned into shards, each scored alone, and committed all or none."""

from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import PipelineError
from pipelines.core.paths import PREDICTIONS, PREDICTIONS_FILE, SHARDS
from pipelines.flows import scoring
from pipelines.governance.registry import Registry
from pipelines.storage.partitions import partition_dir
from tests.conftest import START

DS = (START + timedelta(days=10)).isoformat()
COMPARED = ["id", "score", "prediction", "model_version", "scoring_engine"]


@pytest.fixture
def lake(champion_lake, tmp_path):
    """A private data root whose night DS is two files of 300-row row groups (2,000 rows)."""
    data = tmp_path / "data"
    source = partition_dir(champion_lake.data_root, "incoming", DS)
    table = pq.read_table(source)
    target = partition_dir(data, "incoming", DS)
    target.mkdir(parents=True)
    half = table.num_rows // 2 + 7
    pq.write_table(table.slice(0, half), target / "part-a.parquet", row_group_size=300)
    pq.write_table(table.slice(half), target / "part-b.parquet", row_group_size=300)
    return champion_lake.model_copy(update={"data_root": data})


def sharding(config, shard_rows, max_shards=8):
    return config.model_copy(
        update={"scoring": config.scoring.model_copy(update={"shard_rows": shard_rows, "max_shards": max_shards})}
    )


def _read(config):
    frame = pd.read_parquet(partition_dir(config.data_root, PREDICTIONS, DS) / PREDICTIONS_FILE)
    return frame.sort_values("id").reset_index(drop=True)


def _score_sharded(config, run_id="run-sharded"):
    ref = Registry.open(config).champion()
    shards = scoring.plan_shards(config, DS, ref)
    done = [scoring.score_shard(config, shard, run_id) for shard in shards]
    return shards, scoring.score_partition(config, DS, ref, run_id, done)


def test_a_partition_up_to_shard_rows_is_scored_by_one_task(lake):
    ref = Registry.open(lake).champion()
    assert scoring.plan_shards(sharding(lake, 2000), DS, ref) == []
    assert len(scoring.plan_shards(sharding(lake, 1999), DS, ref)) == 2


def test_shards_cover_every_row_once_across_files_and_row_groups(lake):
    config = sharding(lake, 700, max_shards=3)
    shards = scoring.plan_shards(config, DS, Registry.open(config).champion())
    assert [s.index for s in shards] == [0, 1, 2] and {s.count for s in shards} == {3}
    covered = [
        (piece.file, piece.row_group, row)
        for s in shards
        for piece in s.slices
        for row in range(piece.start, piece.stop)
    ]
    assert len(covered) == len(set(covered)) == 2000  # every row of every row group, once
    assert sorted(s.rows for s in shards) == [666, 667, 667]  # as even as whole rows allow
    assert all(sum(p.stop - p.start for p in s.slices) == s.rows for s in shards)
    assert {p.file for p in shards[1].slices} == {"part-a.parquet", "part-b.parquet"}  # a shard spans both files


def test_the_shard_count_is_bounded_by_max_shards(lake):
    shards = scoring.plan_shards(sharding(lake, 1, max_shards=4), DS, Registry.open(lake).champion())
    assert len(shards) == 4 and sum(s.rows for s in shards) == 2000


def test_a_sharded_night_equals_the_one_task_night(lake):
    ref = Registry.open(lake).champion()
    whole = scoring.score_partition(lake, DS, ref, "run-whole")
    one_task = _read(lake)
    config = sharding(lake, 700, max_shards=3)
    _, summary = _score_sharded(config)
    sharded = _read(config)
    pd.testing.assert_frame_equal(sharded[COMPARED], one_task[COMPARED])
    assert set(sharded["airflow_run_id"]) == {"run-sharded"}
    assert summary.shards == 3 and summary.rows == whole.rows == 2000 and whole.shards == 0
    assert summary.mean_score == pytest.approx(whole.mean_score, abs=1e-12)
    assert summary.engine_rows == whole.engine_rows
    assert not (partition_dir(config.data_root, PREDICTIONS, DS) / SHARDS).exists()  # parts removed after commit


def test_a_retried_shard_leaves_no_duplicate(lake):
    config = sharding(lake, 700, max_shards=3)
    ref = Registry.open(config).champion()
    shards = scoring.plan_shards(config, DS, ref)
    first = scoring.score_shard(config, shards[0], "run-r")
    again = scoring.score_shard(config, shards[0], "run-r")  # Airflow retried the task: same file, replaced
    assert again.path == first.path
    done = [again] + [scoring.score_shard(config, s, "run-r") for s in shards[1:]]
    scoring.score_partition(config, DS, ref, "run-r", done)
    frame = _read(config)
    assert len(frame) == 2000 and frame["id"].is_unique


def test_a_night_with_a_missing_shard_commits_nothing(lake):
    ref = Registry.open(lake).champion()
    scoring.score_partition(lake, DS, ref, "run-before")
    before = _read(lake)
    config = sharding(lake, 700, max_shards=3)
    shards = scoring.plan_shards(config, DS, ref)
    done = [scoring.score_shard(config, s, "run-x") for s in shards]
    with pytest.raises(PipelineError, match=r"shards \[0, 2\] of 3 were scored; every shard must succeed"):
        scoring.score_partition(config, DS, ref, "run-x", [done[0], done[2]])
    pd.testing.assert_frame_equal(_read(config), before)  # the published night is untouched
    truncated = done[1].model_copy(update={"rows": done[1].rows - 1})
    with pytest.raises(PipelineError, match="the shards hold 1,999 rows but the partition has 2,000"):
        scoring.score_partition(config, DS, ref, "run-x", [done[0], truncated, done[2]])
    pd.testing.assert_frame_equal(_read(config), before)
