"""The monitoring history: one row per night and model version, the single record the decision and the UI read."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import NightRecord
from pipelines.core.paths import MONITORING

log = logging.getLogger(__name__)
METADATA = sa.MetaData()
NIGHTS = sa.Table(
    "nights",
    METADATA,
    sa.Column("ds", sa.String(10), primary_key=True),
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("rows", sa.BigInteger),
    sa.Column("validation_success", sa.Boolean),
    sa.Column("validation_failures", sa.JSON),
    sa.Column("validation_warnings", sa.JSON),  # data-quality findings of checks set to warn (the night was scored)
    sa.Column("drift_share", sa.Float),
    sa.Column("drifted_columns", sa.JSON),
    sa.Column("score_drifted", sa.Boolean),
    sa.Column("drift_stats", sa.JSON),
    sa.Column("estimated_roc_auc", sa.Float),
    sa.Column("estimated_accuracy", sa.Float),
    sa.Column("realised_roc_auc", sa.Float),
    sa.Column("realised_accuracy", sa.Float),
    sa.Column("realised_metrics", sa.JSON),
    sa.Column("estimated_metrics", sa.JSON),  # the kind's estimates
    sa.Column("metric", sa.String(32)),  # retraining.metric (the kind's primary metric by default)
    sa.Column("estimated_metric", sa.Float),
    sa.Column("realised_metric", sa.Float),
    sa.Column("label_coverage", sa.Float),
    sa.Column("decision", sa.String(32)),
    sa.Column("decision_reasons", sa.JSON),
    sa.Column("segment_estimates", sa.JSON),  # monitoring.segments: per segment of the night's sample
    sa.Column("segment_realised", sa.JSON),  # per segment once its labels arrived, with intervals
    sa.Column("episode_id", sa.Integer),  # the episode the night's rules fired in (storage.episodes)
    sa.Column("request_outcome", sa.String(500)),  # what the night's retraining request did
    sa.Column("request_result", sa.String(500)),  # what the retraining run the request started did
    sa.Column("request_run_id", sa.String(250)),  # that run's Airflow run id
    sa.Column("reports", sa.JSON),
    sa.Column("scoring_rows_per_s", sa.Float),
    sa.Column("scoring_peak_rss_mb", sa.Float),
    sa.Column("task_seconds", sa.JSON),
    sa.Column("scoring_engine", sa.String(32)),  # compiled or sklearn
    sa.Column("scoring_engine_rows", sa.JSON),  # rows scored by each engine
    sa.Column("scoring_engine_reason", sa.String(500)),  # why scikit-learn scored
    sa.Column("airflow_run_id", sa.String(250)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),  # when this version scored the night (a rerun's time)
)
# NightRecord's fields, updated_at and recorded_at (tests/pipelines/test_history.py)
COLUMNS = {c.name for c in NIGHTS.columns}
_ENGINES: dict[str, sa.Engine] = {}


def engine(config: PipelineConfig) -> sa.Engine:
    """Return the history database engine, creating the table on first use."""
    url = config.history_url
    if url not in _ENGINES:
        if url.startswith("sqlite:///"):
            (config.work_root / MONITORING).mkdir(parents=True, exist_ok=True)
        # SQLite: no pooled connections, so every use opens the file on disk now (a database restored by copying a
        # file over it is what the next page view reads, not the old file a pooled connection still holds open)
        options = {"poolclass": sa.pool.NullPool} if url.startswith("sqlite") else {}
        created = sa.create_engine(url, **options)
        METADATA.create_all(created)
        add_missing_columns(created, NIGHTS)
        _ENGINES[url] = created
    return _ENGINES[url]


def dispose(url: str) -> None:
    """Close and forget the engine of `url` (before its database is dropped, or to reconnect)."""
    if url in _ENGINES:
        _ENGINES.pop(url).dispose()


def add_missing_columns(db: sa.Engine, table: sa.Table) -> None:
    """Add the columns a newer release introduced to a table an older one created (nullable, no data lost)."""
    for column in table.columns:
        if column.name in {c["name"] for c in sa.inspect(db).get_columns(table.name)}:
            continue
        kind = column.type.compile(dialect=db.dialect)
        try:
            with db.begin() as conn:
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        except sa.exc.DBAPIError:  # another process added it first
            if column.name not in {c["name"] for c in sa.inspect(db).get_columns(table.name)}:
                raise


def _mine(config: PipelineConfig) -> Any:
    """The rows of the config's model: one history database holds many models."""
    return NIGHTS.c.model_name == config.model.registered_name


def _key(ds: str, model_name: str, model_version: str) -> Any:
    return sa.and_(NIGHTS.c.ds == ds, NIGHTS.c.model_name == model_name, NIGHTS.c.model_version == model_version)


def record_night(config: PipelineConfig, record: NightRecord) -> None:
    """Replace a night's entry with a fresh one (a rerun starts over: no stale facts survive)."""
    key = _key(record.ds, record.model_name, record.model_version)
    with engine(config).begin() as conn:
        conn.execute(NIGHTS.delete().where(key))
        now = datetime.now(UTC)
        conn.execute(NIGHTS.insert().values(**record.model_dump(), updated_at=now, recorded_at=now))


def update_night(config: PipelineConfig, record: NightRecord) -> None:
    """Add the facts set in `record` to an existing entry (later tasks of the run, or labels that arrive days later)."""
    facts = record.model_dump(exclude_unset=True)  # the key columns too: set to the values they are matched on
    with engine(config).begin() as conn:
        result = conn.execute(
            NIGHTS.update()
            .where(_key(record.ds, record.model_name, record.model_version))
            .values(updated_at=datetime.now(UTC), **facts)
        )
        if result.rowcount == 0:
            raise LookupError(
                f"no history entry for ds={record.ds} {record.model_name} v{record.model_version}: record the night first"
            )


def note_request_result(config: PipelineConfig, ds: str, result: str, run_id: str) -> None:
    """Record on the night that requested retraining what the run it started did (skipped, rejected, promoted)."""
    with engine(config).begin() as conn:
        conn.execute(
            NIGHTS.update()
            .where(_mine(config), NIGHTS.c.ds == ds, NIGHTS.c.episode_id.is_not(None))
            .values(request_result=result[:500], request_run_id=run_id[:250])
        )


def merge_task_seconds(
    config: PipelineConfig, ds: str, model_name: str, model_version: str, seconds: dict[str, float]
) -> None:
    """Add task durations to a night's entry."""
    current = night(config, ds, model_name, model_version) or {}
    merged = {**(current.get("task_seconds") or {}), **seconds}
    update_night(config, NightRecord(ds=ds, model_name=model_name, model_version=model_version, task_seconds=merged))


def night(config: PipelineConfig, ds: str, model_name: str, model_version: str) -> dict[str, Any] | None:
    """Return one night's entry as a dict, or None."""
    with engine(config).connect() as conn:
        row = conn.execute(NIGHTS.select().where(_key(ds, model_name, model_version))).mappings().first()
    return dict(row) if row else None


def read_history(config: PipelineConfig) -> pd.DataFrame:
    """Return the model's history ordered by night (one row per night and model version)."""
    with engine(config).connect() as conn:
        frame = pd.read_sql(NIGHTS.select().where(_mine(config)).order_by(NIGHTS.c.ds, NIGHTS.c.model_version), conn)
    for column in (
        "validation_failures",
        "validation_warnings",
        "drifted_columns",
        "drift_stats",
        "realised_metrics",
        "estimated_metrics",
        "decision_reasons",
        "reports",
        "task_seconds",
        "scoring_engine_rows",
        "segment_estimates",
        "segment_realised",
    ):
        frame[column] = frame[column].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return frame


def reports_before(config: PipelineConfig, ds: str) -> list[dict[str, Any]]:
    """The model's nights before `ds` with their key and `reports` only (retention reads no other column)."""
    with engine(config).connect() as conn:
        rows = conn.execute(
            sa.select(NIGHTS.c.ds, NIGHTS.c.model_name, NIGHTS.c.model_version, NIGHTS.c.reports).where(
                _mine(config), NIGHTS.c.ds < ds
            )
        ).mappings()
        found = [dict(row) for row in rows]
    for row in found:
        if isinstance(row["reports"], str):
            row["reports"] = json.loads(row["reports"])
    return found


def quarantined_nights(config: PipelineConfig) -> set[str]:
    """The nights whose latest record is a refusal by validation (the database's word, beside the report store's)."""
    latest: dict[str, tuple[Any, bool]] = {}
    with engine(config).connect() as conn:
        rows = conn.execute(
            sa.select(NIGHTS.c.ds, NIGHTS.c.validation_success, NIGHTS.c.updated_at).where(_mine(config))
        ).all()
    for ds, success, at in rows:
        if ds not in latest or (at is not None and (latest[ds][0] is None or at > latest[ds][0])):
            latest[ds] = (at, bool(success))
    return {ds for ds, (_, success) in latest.items() if not success}


def scored_versions(config: PipelineConfig) -> list[str]:
    """The model versions the history recorded nights for, oldest night first (evidence of earlier champions)."""
    with engine(config).connect() as conn:
        rows = conn.execute(
            sa.select(NIGHTS.c.model_version, NIGHTS.c.ds).where(_mine(config)).order_by(NIGHTS.c.ds)
        ).all()
    return list(dict.fromkeys(str(version) for version, _ in rows if version))


def has_nights(config: PipelineConfig) -> bool:
    """Return whether any night was ever recorded (evidence of an earlier deployment)."""
    with engine(config).connect() as conn:
        return conn.execute(sa.select(NIGHTS.c.ds).where(_mine(config)).limit(1)).first() is not None
