"""Shared fixtures: a small config on a temporary data root and MLflow store, and a bootstrapped champion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.topology import postgres_admin
from pipelines.core.config import DEFAULT_CONFIG, PipelineConfig, load_config

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
# the audit log's HMAC key; every process of a test (pytest itself, Airflow subprocesses) uses the same one
AUDIT_KEY = os.environ.setdefault("AIRFLOW_VAR_PIPELINE_AUDIT_KEY", "tests-only-audit-key")
# `make test` runs two pytest-xdist workers (gw0, gw1): each topology world takes the Redis database of its worker
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    os.environ.setdefault("TOPOLOGY_REDIS_DB", str(1 + int(os.environ["PYTEST_XDIST_WORKER"][2:]) % 15))

REPO = Path(__file__).resolve().parent.parent
START = date(2026, 9, 1)
DAYS = 12
ROWS = 2000


def write_config(folder: Path, name: str = "pipeline.yaml", kind: str | None = None, **overrides: object) -> Path:
    """Write the default config with its stores under `folder` (and any top-level overrides); return the file.

    `kind` (multiclass, regression): the generator's label of that kind, the kind's default metrics and floors.
    """
    from harness.sample_data import TARGETS

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if kind is not None:
        raw["target"] = TARGETS[kind]
        raw["model"] |= {"kind": kind, "registered_name": f"{kind}_model"}
        for section, keys in (("retraining", ("metric", "realised_floor")), ("promotion", ("metric", "floors"))):
            for key in keys:
                raw[section].pop(key, None)
    raw["data_root"] = str(folder / "data")
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    raw["training"]["min_rows"] = 500
    # compiling every model the suite registers would cost minutes: the compiled engine's own tests, and the nightly
    # end-to-end world, set scoring.engine back to the default (auto)
    raw["scoring"]["engine"] = "sklearn"
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


S3 = {"AWS_ACCESS_KEY_ID": "tests", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def object_store() -> Iterator[dict[str, str]]:
    """An S3-compatible server on loopback (moto's, in a thread) for the session: its endpoint and keys."""
    from moto.server import ThreadedMotoServer

    from harness.topology import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {"endpoint_url": f"http://127.0.0.1:{port}", **S3}
    server.stop()


def fresh_bucket(object_store: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """Point this test's environment at the store (keys only there, never in a config) and make an empty bucket."""
    from harness.topology import s3_client

    for key, value in S3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", object_store["endpoint_url"])
    client = s3_client(object_store)
    client.create_bucket(Bucket=name)
    return client


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    return load_config(write_config(tmp_path))


@contextmanager
def fresh_postgres_database(name: str) -> Iterator[str]:
    """Create an empty database (dropped afterwards) and yield its SQLAlchemy URL; skip, or fail in CI, without one."""
    try:
        postgres_admin("SELECT 1")
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is needed: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth): {exc}")
    postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    postgres_admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def champion_lake(tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    """A lake of 12 generated days (labels through day 9) with a bootstrapped champion; shared, treat as read-only."""
    from harness import sample_data
    from pipelines.flows import retraining

    folder = tmp_path_factory.mktemp("champion")
    config = load_config(write_config(folder))
    sample_data.generate(config.data_root, START, DAYS, ROWS, label_delay_days=3)
    days = retraining.select_training_window(config)
    candidate = retraining.train_candidate(config, days, {"airflow_run_id": "pytest", "reason": "bootstrap"})
    assert retraining.bootstrap_or_challenge(config, candidate) == "champion"
    return config


def score_with_champion(config: PipelineConfig, ds: str, run_id: str):
    """Score a night with the current champion (no validation), for the scoring tests."""
    from pipelines.flows import scoring
    from pipelines.governance.registry import Registry

    return scoring.score_partition(config, ds, Registry.open(config).champion(), run_id)


def score_night(config: PipelineConfig, ds: str, run_id: str):
    """Validate a night against the champion and score it, as batch_scoring does; return both values."""
    from pipelines.flows import nightly, scoring

    validated = nightly.validate_partition(config, ds, run_id)
    return validated, scoring.score_partition(config, ds, validated.model, run_id)


def airflow_env(home: Path, config_path: Path) -> dict[str, str]:
    """Environment for a real Airflow process on a temporary AIRFLOW_HOME, this repo's DAGs and a given config."""
    from harness.topology import airflow_env as environment

    return environment(home, config_path, AUDIT_KEY)


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata DB (SQLite) made by `airflow db migrate` once per session; `airflow_home` copies it.

    Every SQLite world of the suite starts from what the migration makes; running it once instead of once per
    world saves its 15 s each time.
    """
    home = tmp_path_factory.mktemp("airflow-db")
    env = airflow_env(home, home / "pipeline.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return home / "airflow.db"


def airflow_home(airflow_db: Path, home: Path) -> Path:
    """Make `home` an AIRFLOW_HOME with a fresh copy of the migrated metadata DB; return it."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(airflow_db, home / "airflow.db")
    return home


def copy_lake(config: PipelineConfig, folder: Path) -> PipelineConfig:
    """Copy a config's data root and MLflow store under `folder`; the copy's artifact paths point at its own folder.

    MLflow's SQLite store keeps absolute artifact paths, so a plain copy would still read (and a test that
    removes artifacts would damage) the original's files.
    """
    import sqlite3

    shutil.copytree(config.data_root, folder / "data")
    shutil.copytree(config.mlflow.store_dir, folder / "mlflow")
    old, new = str(config.mlflow.store_dir), str(folder / "mlflow")
    with sqlite3.connect(folder / "mlflow" / "mlflow.db") as db:
        for table, column in (
            ("runs", "artifact_uri"),
            ("logged_models", "artifact_location"),
            ("experiments", "artifact_location"),
            ("model_versions", "storage_location"),
            ("model_versions", "source"),
        ):
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (old, new))
    copy = load_config(write_config(folder))
    return copy.model_copy(update={"model": config.model, "scoring": config.scoring})
