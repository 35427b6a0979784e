"""Retraining episodes: one row per problem the monitoring found, in the history database beside the nights.

An episode is read and changed whole (`change_open`) under a lock, so the nightly decision and a retraining run's
outcome never overwrite each other's change.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Episode, EpisodeState
from pipelines.storage import history
from pipelines.storage.history import METADATA, engine

EPISODES = sa.Table(
    "episodes",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_ds", sa.String(10), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the Episode as JSON
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
KEEP_SHOWN = 50  # episodes a page lists (the newest)
_CREATED: dict[str, sa.Engine] = {}  # the engine each URL's table was created through


def _db(config: PipelineConfig) -> sa.Engine:
    """The history database, with the episodes table (also when the engine was made before this module loaded)."""
    db = engine(config)
    if _CREATED.get(config.history_url) is not db:
        EPISODES.create(db, checkfirst=True)
        _CREATED[config.history_url] = db
    return db


def _mine(config: PipelineConfig) -> Any:
    return EPISODES.c.model_name == config.model.registered_name


def _read(body: str, row_id: int) -> Episode:
    return Episode.model_validate(json.loads(body) | {"id": row_id})


@contextmanager
def _locked(config: PipelineConfig) -> Iterator[sa.Connection]:
    """A transaction holding the model's episodes: FOR UPDATE on a server database, a file lock beside SQLite."""
    db = _db(config)
    if db.dialect.name == "sqlite":
        with open(Path(db.url.database or "history.db").with_suffix(".episodes.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                with db.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with db.begin() as conn:
        # rows of other models are not held; the model's open episode (if any) is
        conn.execute(sa.select(EPISODES.c.id).where(_mine(config)).with_for_update())
        yield conn


def _open_row(conn: sa.Connection, config: PipelineConfig) -> Episode | None:
    row = conn.execute(
        sa.select(EPISODES.c.id, EPISODES.c.body)
        .where(_mine(config), EPISODES.c.state != EpisodeState.CLOSED.value)
        .order_by(EPISODES.c.id.desc())
        .limit(1)
    ).first()
    return _read(row.body, row.id) if row else None


def _write(conn: sa.Connection, episode: Episode) -> Episode:
    body = episode.model_dump_json(exclude={"id"})
    values = {
        "state": episode.state.value,
        "opened_ds": episode.opened_ds,
        "body": body,
        "updated_at": datetime.now(UTC),
    }
    if episode.id is None:
        key = conn.execute(EPISODES.insert().values(model_name=episode.model_name, **values)).inserted_primary_key
        assert key is not None  # an insert into a table with a primary key has one
        return episode.model_copy(update={"id": int(key[0])})
    conn.execute(EPISODES.update().where(EPISODES.c.id == episode.id).values(**values))
    return episode


def change_open(
    config: PipelineConfig, change: Callable[[Episode | None], Episode | None], run_id: str | None = None
) -> Episode | None:
    """Apply `change` to the model's open episode (None when there is none) and store what it returns; return that.

    `change` may return a new episode (stored with a new id), the same one changed, or None (nothing stored).
    `run_id`: the retraining run that made the change; its outcome is recorded on the night that requested it
    (the monitoring page shows what each request led to).
    """
    with _locked(config) as conn:
        changed = change(_open_row(conn, config))
        stored = _write(conn, changed) if changed is not None else None
    if stored is not None and run_id is not None and stored.request_ds:
        history.note_request_result(config, stored.request_ds, stored.outcome, run_id)
    return stored


def open_episode(config: PipelineConfig) -> Episode | None:
    """The model's open episode, or None."""
    with _db(config).connect() as conn:
        return _open_row(conn, config)


def episodes(config: PipelineConfig, limit: int = KEEP_SHOWN) -> list[Episode]:
    """The model's newest episodes, newest first."""
    with _db(config).connect() as conn:
        rows = conn.execute(
            sa.select(EPISODES.c.id, EPISODES.c.body).where(_mine(config)).order_by(EPISODES.c.id.desc()).limit(limit)
        ).all()
    return [_read(row.body, row.id) for row in rows]
