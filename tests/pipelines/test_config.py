from pathlib import Path

import pytest
import yaml

from pipelines.core.config import DEFAULT_CONFIG, load_config
from pipelines.core.errors import ConfigError
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
        (lambda r: r.update(cadence="every night"), "cadence: Value error, 'every night' is not daily, weekly"),
        (lambda r: r.update(schedule="0 2 * * *"), "schedule: renamed to cadence"),
        (lambda r: r["training"].update(window_days=9), "training.window_days: renamed to training.window_partitions"),
        (lambda r: r.update(label_delay_days=1), "label_delay_days: renamed to label_delay_partitions"),
        (lambda r: r["monitoring"]["drift"].update(categorical_method="ks"), "['employment_type (ks)'"),
        (lambda r: r["validation"]["severity"].update(range="ignore"), "validation.severity.range"),
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


def test_cadence_names_and_crons_set_the_schedule(tmp_path):
    assert load_config(write_config(tmp_path)).schedule == "0 2 * * *"
    assert load_config(write_config(tmp_path, cadence="weekly")).schedule == "0 2 * * 1"
    assert load_config(write_config(tmp_path, cadence="yearly")).schedule == "0 2 1 1 *"
    assert load_config(write_config(tmp_path, cadence="30 6 * * 0")).schedule == "30 6 * * 0"


def _typed_partition(config, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = config.data_root / "incoming" / "ds=2026-09-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "part-0.parquet")


def test_a_feature_listed_under_a_kind_its_type_cannot_be_is_refused_by_the_first_task_reading_data(tmp_path):
    import datetime

    import pyarrow as pa

    from pipelines.storage.schema import check_feature_kinds

    features = {"numeric": ["flag", "count", "when", "amount"], "categorical": ["code", "label", "yes_no", "tags"]}
    path = write_config(tmp_path, id_column="id", target="y", timestamp_column=None, features=features)
    config = load_config(path)
    check_feature_kinds(config)  # no data yet: nothing to check against
    _typed_partition(
        config,
        id=pa.array([1]),
        flag=pa.array([True]),
        count=pa.array([3], pa.int32()),
        when=pa.array([datetime.date(2026, 9, 1)]),
        amount=pa.array([1.5]),
        code=pa.array([7]),
        label=pa.array(["x"]).dictionary_encode(),
        yes_no=pa.array([False]),
        tags=pa.array(["a"]),
    )
    check_feature_kinds(load_config(path))  # every type where it makes sense
    # swap two columns: text listed as numeric, a float listed as categorical
    path.write_text(
        path.read_text().replace("- amount", "- TMP").replace("- tags", "- amount").replace("- TMP", "- tags")
    )
    swapped = load_config(path)  # loading reads the YAML only
    with pytest.raises(ConfigError) as info:
        check_feature_kinds(swapped)
    message = str(info.value)
    assert "features.numeric: column 'tags' is string, but numeric features need a number" in message
    assert "features.categorical: column 'amount' is double, but categorical features need text" in message
    assert "list it under features.numeric" in message and "incoming/ds=2026-09-01/part-0.parquet" in message


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"data_root": "~/lake"}, "data_root", "does not expand ~ or $VARIABLES"),
        ({"data_root": "$HOME/lake"}, "data_root", "does not expand ~ or $VARIABLES"),
        ({"data_root": "${DATA}"}, "data_root", "does not expand ~ or $VARIABLES"),
        ({"data_root": "s3:/bucket/lake"}, "data_root", "data_root is a folder or s3://bucket/prefix (two slashes)"),
        ({"work_dir": "~/work"}, "work_dir", "does not expand ~"),
        ({"partition_wait": {"timeout_minutes": float("inf")}}, "partition_wait.timeout_minutes", "finite number"),
        ({"partition_wait": {"timeout_minutes": 1e300}}, "partition_wait.timeout_minutes", "less than or equal"),
        ({"promotion": {"min_gain": float("nan")}}, "promotion.min_gain", "finite number"),
        (
            {"monitoring": {"history_url": "postgresql://ml:hunter2@db/history"}},
            "monitoring.history_url",
            "secrets never go in the YAML; set $PIPELINE_HISTORY_URL",
        ),
        (
            {"mlflow": {"tracking_uri": "https://mlflow.example/?token=hunter2"}},
            "mlflow.tracking_uri",
            "secrets never go in the YAML; set $PIPELINE_MLFLOW_TRACKING_URI",
        ),
    ],
)
def test_values_the_config_would_misread_are_refused_with_the_key_named(tmp_path, overrides, key, problem):

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, **overrides))
    message = str(info.value)
    assert f"  {key}: " in message and problem in message
    assert "hunter2" not in message


def test_secrets_in_urls_are_masked_in_every_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_REPORT_STORE", "s3://reports/x?X-Amz-Signature=hunter2")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path))
    assert "hunter2" not in str(info.value) and "s3://reports/x?***" in str(info.value)
    monkeypatch.delenv("PIPELINE_REPORT_STORE")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data_root="s3://AKIA:hunter2@bucket/lake"))
    assert "hunter2" not in str(info.value)


def test_a_password_from_the_environment_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_HISTORY_URL", "postgresql://ml:hunter2@127.0.0.1/history")
    assert load_config(write_config(tmp_path)).history_url.endswith("@127.0.0.1/history")
