from pathlib import Path

import pytest
import yaml

from pipelines.config import DEFAULT_CONFIG, load_config
from pipelines.errors import ConfigError
from tests.conftest import write_config


def test_default_config_loads_with_absolute_paths():
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.data_root.is_absolute()
    assert config.data_root == (DEFAULT_CONFIG.parent / "../../var/data").resolve()
    assert config.tracking_uri == f"sqlite:///{config.mlflow.store_dir / 'mlflow.db'}"
    assert "annual_income" in config.features.numeric


def test_pipeline_config_env_selects_the_file(tmp_path):
    path = write_config(tmp_path, target="defaulted")
    config = load_config(environ={"PIPELINE_CONFIG": str(path)})
    assert config.data_root == tmp_path / "data"


def test_tracking_uri_from_environment_overrides_the_file(tmp_path):
    config = load_config(write_config(tmp_path), environ={"PIPELINE_MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert config.tracking_uri == "http://mlflow:5000"


def test_history_url_from_environment_overrides_the_file(tmp_path):
    url = "postgresql+psycopg2://airflow:secret@postgres:5432/airflow"
    config = load_config(write_config(tmp_path), environ={"PIPELINE_HISTORY_URL": url})
    assert config.history_url == url
    assert load_config(write_config(tmp_path)).history_url.startswith("sqlite:///")


def _broken(tmp_path: Path, mutate) -> Path:
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["validation"].update(null_rate_tolerance=2), "validation.null_rate_tolerance"),
        (lambda r: r["scoring"].update(batch_rowz=10), "scoring.batch_rowz: unknown key"),
        (lambda r: r.update(schedule="every night"), "schedule"),
        (lambda r: r.pop("model"), "model: Field required"),
        (lambda r: r["features"].update(numeric=["age", "age"]), "listed twice"),
        (lambda r: r["model"].update(registered_name="../x"), "model.registered_name"),
    ],
)
def test_bad_config_names_the_key(tmp_path, mutate, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_broken(tmp_path, mutate))
    assert expected in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_file_says_how_to_choose_one(tmp_path):
    with pytest.raises(ConfigError, match="PIPELINE_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_loading_creates_no_folders(tmp_path):
    config = load_config(write_config(tmp_path))
    assert not config.data_root.exists()
    assert not config.mlflow.store_dir.exists()
