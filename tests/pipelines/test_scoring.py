import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import NoChampionError
from pipelines.flows import scoring
from pipelines.governance import registry
from pipelines.governance.registry import Registry
from pipelines.storage.partitions import partition_dir
from tests.conftest import score_with_champion

CONTRACT = [
    "id",
    "score",
    "prediction",
    "model_name",
    "model_version",
    "mlflow_run_id",
    "scored_at",
    "airflow_run_id",
    "scoring_engine",
]


@pytest.fixture
def lake(champion_lake, tmp_path):
    """The shared champion lake with a private copy of its data root."""
    data = tmp_path / "data"
    shutil.copytree(champion_lake.data_root / "incoming", data / "incoming")
    return champion_lake.model_copy(
        update={
            "data_root": data,
            "scoring": champion_lake.scoring.model_copy(update={"batch_rows": 1024, "predict_chunk_rows": 256}),
        }
    )


def _predictions(config, ds):
    return pd.read_parquet(partition_dir(config.data_root, "predictions", ds))


def test_scoring_writes_the_contract_with_lineage(lake):
    summary = score_with_champion(lake, "2026-09-11", "scheduled__2026-09-12")
    ref = Registry.open(lake).champion()
    out = _predictions(lake, "2026-09-11")
    assert list(out.columns) == CONTRACT
    incoming = pd.read_parquet(partition_dir(lake.data_root, "incoming", "2026-09-11"))
    assert out["id"].is_unique and set(out["id"]) == set(incoming["application_id"])
    assert (out["model_version"] == ref.version).all() and (out["mlflow_run_id"] == ref.run_id).all()
    assert (out["model_name"] == ref.name).all() and (out["airflow_run_id"] == "scheduled__2026-09-12").all()
    assert str(out["scored_at"].dt.tz) == "UTC"
    assert summary.rows == len(incoming) and summary.model_version == ref.version
    assert summary.mean_score == pytest.approx(out["score"].mean())


def test_streamed_scores_equal_whole_frame_scores(lake):
    score_with_champion(lake, "2026-09-11", "run")
    model = Registry.open(lake).load_model(Registry.open(lake).champion())
    incoming = pd.read_parquet(partition_dir(lake.data_root, "incoming", "2026-09-11"))
    expected = model.predict_proba(incoming[lake.features.all])[:, 1]
    out = _predictions(lake, "2026-09-11").set_index("id").loc[incoming["application_id"]]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), (expected >= lake.model.decision_threshold).astype(int))


def test_rerun_replaces_the_partition(lake):
    score_with_champion(lake, "2026-09-11", "first")
    first = _predictions(lake, "2026-09-11")
    score_with_champion(lake, "2026-09-11", "second")
    second = _predictions(lake, "2026-09-11")
    assert len(second) == len(first) and second["id"].is_unique
    pd.testing.assert_series_equal(first["score"], second["score"])
    assert (second["airflow_run_id"] == "second").all()
    assert sorted(p.name for p in partition_dir(lake.data_root, "predictions", "2026-09-11").iterdir()) == [
        ".lock",
        "predictions.parquet",
    ]


def test_a_crash_mid_partition_keeps_the_previous_predictions(lake, monkeypatch):
    score_with_champion(lake, "2026-09-11", "good")
    folder = partition_dir(lake.data_root, "predictions", "2026-09-11")
    before = (folder / "predictions.parquet").read_bytes()
    calls = {"n": 0}
    real = scoring.predict_scores

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_scores", crash_on_second_batch)
    with pytest.raises(MemoryError):
        score_with_champion(lake, "2026-09-11", "crashing")
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "predictions.parquet"]
    assert (folder / "predictions.parquet").read_bytes() == before


def test_progress_is_logged_with_one_throughput_figure_that_the_summary_repeats(lake, caplog):
    caplog.set_level("INFO", logger="pipelines.flows.scoring")
    summary = score_with_champion(lake, "2026-09-10", "run")
    last = [r.message for r in caplog.records if "rows/s" in r.message and "2,000 / 2,000 rows" in r.message]
    assert last
    progress_rate = float(re.search(r"([\d,]+) rows/s", last[-1]).group(1).replace(",", ""))
    # the summary's figure leaves the model load out, as the progress lines do: the two agree (not 170x apart)
    assert 0.5 < summary.rows_per_second / progress_rate < 2
    assert summary.rows_per_second == pytest.approx(summary.rows / (summary.seconds - summary.load_seconds))
    assert summary.load_seconds > 0
    messages = [r.message for r in caplog.records]
    assert any(m.startswith(f"stage load model version {summary.model_version}: done in") for m in messages)
    assert any(f"model load {summary.load_seconds:.1f} s" in m for m in messages)


def test_no_champion_is_a_clear_error(config):
    registry.init_store(config)
    with pytest.raises(NoChampionError, match="retrain_model"):
        score_with_champion(config, "2026-09-11", "run")


def test_row_groups_stream_in_batches(lake):
    score_with_champion(lake, "2026-09-12", "run")
    meta = pq.ParquetFile(partition_dir(lake.data_root, "predictions", "2026-09-12") / "predictions.parquet").metadata
    assert meta.num_rows == 2000
