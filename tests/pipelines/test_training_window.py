"""The training window: sliding, or since the drift onset the monitoring history recorded against the champion."""

import shutil

import pytest

from pipelines.core.config import load_config
from pipelines.core.contracts import NightRecord
from pipelines.core.errors import TrainingNotReady
from pipelines.flows.retraining import drift_onset, select_training_window
from pipelines.governance import registry
from pipelines.governance.registry import Registry
from pipelines.storage import history
from tests.conftest import write_config


@pytest.fixture
def lake(champion_lake, tmp_path):
    """A private copy of the champion lake's data (history is written here) sharing its MLflow store (read only)."""
    shutil.copytree(champion_lake.data_root, tmp_path / "data")

    def make(**overrides):
        path = write_config(tmp_path, **overrides)
        path.write_text(path.read_text().replace(str(tmp_path / "mlflow"), str(champion_lake.mlflow.store_dir)))
        return load_config(path)

    return make


def _nights(config, shares):
    version = Registry.open(config).champion().version
    for ds, share in shares.items():
        history.record_night(
            config,
            NightRecord(
                ds=ds,
                model_name=config.model.registered_name,
                model_version=version,
                rows=10,
                drift_share=share,
                validation_success=share is not None,
            ),
        )


def test_without_recorded_drift_the_window_slides(lake):
    config = lake()
    plan = select_training_window(config)
    assert plan.mode == "sliding" and plan.onset is None
    assert plan.days[0] == "2026-09-01" and plan.days[-1] == "2026-09-09"
    assert len(select_training_window(config, window_partitions=3).days) == 3


def test_onset_is_the_first_night_of_the_newest_drift_streak(lake):
    config = lake()
    # an older streak (03), a calm night (04), then drift from 06; the quarantined night (07) does not break it
    _nights(
        config,
        {
            "2026-09-03": 0.4,
            "2026-09-04": 0.1,
            "2026-09-05": 0.2,
            "2026-09-06": 0.3,
            "2026-09-07": None,
            "2026-09-08": 0.5,
        },
    )
    assert (
        drift_onset(config, Registry.open(config)) is None
    )  # two drifted nights: fewer than drift_consecutive_nights (3), no onset yet
    _nights(config, {"2026-09-09": 0.3})
    assert str(drift_onset(config, Registry.open(config))) == "2026-09-06"
    other = registry.ModelRef(config.model.registered_name, "999", "x")
    history.record_night(
        config,
        NightRecord(ds="2026-09-10", model_name=other.name, model_version=other.version, rows=1, drift_share=0.9),
    )
    assert (
        str(drift_onset(config, Registry.open(config))) == "2026-09-06"
    )  # nights measured against another model do not count


def test_since_onset_trains_only_after_the_onset_once_enough_days_are_labelled(lake):
    config = lake(training={"min_partitions_since_onset": 4})
    _nights(config, {"2026-09-05": 0.1, "2026-09-06": 0.3, "2026-09-07": 0.35, "2026-09-08": 0.3})
    plan = select_training_window(config)
    assert plan.model_dump() == {
        "days": ["2026-09-06", "2026-09-07", "2026-09-08", "2026-09-09"],
        "mode": "since_drift_onset",
        "onset": "2026-09-06",
    }
    assert select_training_window(config, window="sliding").days[0] == "2026-09-01"


def test_too_few_labelled_days_since_the_onset_is_not_ready_yet(lake):
    config = lake()  # min_partitions_since_onset 6
    _nights(config, {"2026-09-06": 0.3, "2026-09-07": 0.35, "2026-09-08": 0.3})
    with pytest.raises(TrainingNotReady, match=r"drift began on 2026-09-06, and only 4 labelled partition\(s\)") as err:
        select_training_window(config)
    assert "window=sliding" in str(err.value)


def test_a_single_noisy_night_is_not_an_onset(lake):
    config = lake()
    _nights(
        config,
        {
            "2026-09-03": 0.1,
            "2026-09-04": 0.1,
            "2026-09-05": 0.1,
            "2026-09-06": 0.3,
            "2026-09-07": 0.1,
            "2026-09-08": 0.4,
            "2026-09-09": 0.1,
        },
    )
    assert drift_onset(config, Registry.open(config)) is None
    assert select_training_window(config).mode == "sliding"


def test_too_few_labelled_rows_waits_instead_of_failing(lake):
    config = lake(training={"min_rows": 50_000})
    with pytest.raises(
        TrainingNotReady, match=r"only 12,000 labelled rows in the 6 training partition\(s\).*min_rows is 50,000"
    ):
        select_training_window(config, window_partitions=9)
