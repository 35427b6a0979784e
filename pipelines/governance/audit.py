"""The audit log of alias moves: append-only rows in the history database, each keyed-hashed over the one before.

Integrity holds against three things: a rewritten entry (every entry carries an HMAC-SHA256 of its
body and the previous entry's hash, keyed with the Airflow Variable `pipeline_audit_key`, so
recomputing the chain needs the key), a removed entry (entries are numbered 1, 2, ... per model, and the
entry count and head hash are kept in a second table, written in the same transaction) and a crash
mid-append (an entry and its head are one transaction: either both are there or neither). The database
refuses UPDATE and DELETE on the log (triggers on SQLite and PostgreSQL), so a change needs someone who
can drop a trigger, and then shows in the chain.

The log lives where the history does (`monitoring.history_url`): with PostgreSQL every worker of a
distributed deployment reads and appends the same log, and `audit_lock` holds across machines (a row
lock in the database; on SQLite, which is one machine's file, a file lock beside it). Entries are written
before the alias moves they describe, so an interrupted move is finished by the next holder of the lock.
A log kept as a JSON-lines file by an earlier release (`<data_root>/monitoring/model_audit.jsonl`) is
verified and moved into the database on first use.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipelines.core.config import AUDIT_KEY_ENV_VAR, PipelineConfig
from pipelines.core.contracts import MOVES, AuditEntry
from pipelines.core.errors import AuditIntegrityError
from pipelines.storage import history

log = logging.getLogger(__name__)
_HOLDING: ContextVar[bool] = ContextVar("audit_lock_held", default=False)


# The log's three tables live in the history database (monitoring.history_url), created on first use by _db.
AUDIT_METADATA = sa.MetaData()
# The audit log's head (entry count and last hash), kept away from the log file so truncation or a rewrite shows.
AUDIT_HEAD = sa.Table(
    "audit_head",
    AUDIT_METADATA,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("entries", sa.Integer, nullable=False),
    sa.Column("head_hash", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # HMAC of (model, entries, head hash) with the audit key: rewriting the head (to hide a removed tail) needs the key
    sa.Column("head_mac", sa.String(128)),
)
# The audit log of alias moves (pipelines.governance.audit): append-only rows, each entry's JSON text as it was hashed.
AUDIT_LOG = sa.Table(
    "audit_log",
    AUDIT_METADATA,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),  # 1, 2, ... per model: a gap is a deletion
    sa.Column("entry", sa.Text, nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),
)
# One row per model, locked (SELECT ... FOR UPDATE) while an alias move is decided and made (not on SQLite).
AUDIT_LOCKS = sa.Table("audit_locks", AUDIT_METADATA, sa.Column("model_name", sa.String(200), primary_key=True))
_READY: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def database(config: PipelineConfig) -> sa.Engine:
    """The history database's engine, with the audit tables and their append-only triggers made on first use."""
    db = history.engine(config)
    if db not in _READY:
        AUDIT_METADATA.create_all(db)
        history.add_missing_columns(db, AUDIT_HEAD)
        _make_append_only(db)
        _READY.add(db)
    return db


def _make_append_only(db: sa.Engine) -> None:
    """Have the database itself refuse UPDATE and DELETE on the audit log (SQLite and PostgreSQL triggers)."""
    message = "audit_log is append-only: entries are never changed or removed"
    if db.dialect.name == "sqlite":
        statements = [
            f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for verb in ("UPDATE", "DELETE")
        ]
    elif db.dialect.name == "postgresql":
        with db.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_trigger WHERE tgname = 'audit_log_append_only'")).first()
        if exists:
            return
        statements = [
            "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$",
            "CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
        ]
    else:  # other databases: the hash chain and the head record still show a change
        return
    try:
        with db.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    except sa.exc.DBAPIError:  # another process created them at the same moment
        log.debug("audit_log triggers were being created by another process")


def audit_head(config: PipelineConfig, model_name: str) -> tuple[int, str, str | None] | None:
    """Return the recorded (entry count, head hash, head MAC) of a model's audit log, or None if none was recorded."""
    with database(config).connect() as conn:
        row = conn.execute(
            sa.select(AUDIT_HEAD.c.entries, AUDIT_HEAD.c.head_hash, AUDIT_HEAD.c.head_mac).where(
                AUDIT_HEAD.c.model_name == model_name
            )
        ).first()
    return (int(row[0]), str(row[1]), row[2]) if row else None


def set_audit_head(conn: sa.Connection, model_name: str, entries: int, head_hash: str, head_mac: str | None) -> None:
    """Record the audit log's new head, in the transaction `conn` that appends the entry ."""
    conn.execute(AUDIT_HEAD.delete().where(AUDIT_HEAD.c.model_name == model_name))
    conn.execute(
        AUDIT_HEAD.insert().values(
            model_name=model_name,
            entries=entries,
            head_hash=head_hash,
            head_mac=head_mac,
            updated_at=datetime.now(UTC),
        )
    )


@dataclass
class AuditTrail:
    """The verified entries, oldest first, and what the reader should be told about the log."""

    entries: list[AuditEntry]
    warnings: list[str] = field(default_factory=list)


def _digest(config: PipelineConfig, body: dict[str, Any]) -> tuple[str, str]:
    payload = json.dumps(body, sort_keys=True, default=str).encode()
    if config.audit_key:
        return "hmac-sha256", hmac.new(config.audit_key.encode(), payload, hashlib.sha256).hexdigest()
    return "sha256", hashlib.sha256(payload).hexdigest()


def _head_mac(config: PipelineConfig, name: str, entries: int, head_hash: str) -> str | None:
    """The head record's HMAC with the audit key (None without a key): a head moved back needs the key."""
    if not config.audit_key:
        return None
    payload = json.dumps([name, entries, head_hash]).encode()
    return hmac.new(config.audit_key.encode(), payload, hashlib.sha256).hexdigest()


def read_trail(config: PipelineConfig) -> AuditTrail:
    """Read and verify the audit log; raise AuditIntegrityError if it was truncated, rewritten or cannot be verified."""
    _move_file_log_in(config)
    name = config.model.registered_name
    with database(config).connect() as conn:
        rows = conn.execute(
            sa.select(AUDIT_LOG.c.seq, AUDIT_LOG.c.entry, AUDIT_LOG.c.hash)
            .where(AUDIT_LOG.c.model_name == name)
            .order_by(AUDIT_LOG.c.seq)
        ).all()
    trail = _verify(config, [(int(seq), text) for seq, text, _ in rows], f"the audit log of {name}")
    head = audit_head(config, name)
    count = len(trail.entries)
    where = f"the audit log of {name} ({_safe_url(config)})"
    if head is None and count:
        raise AuditIntegrityError(
            f"{where} holds {count} entries, but has no record of its head: the entries were copied in or the head "
            "table emptied; restore the database from backup"
        )
    if head is not None:
        recorded, head_hash, head_mac = head
        expected_mac = _head_mac(config, name, recorded, head_hash)
        if expected_mac is not None and not hmac.compare_digest(str(head_mac), expected_mac):
            raise AuditIntegrityError(
                f"{where}: its head record (entry count and last hash) was changed or written without the key, so "
                "entries may have been removed from its end; restore the database from backup (after an upgrade from "
                "a release without keyed heads, check the log and run `nightly-ml seal-audit`)"
            )
        if count < recorded:
            raise AuditIntegrityError(
                f"{where} was truncated: it holds {count} entries, the head record says {recorded}; restore it from backup"
            )
        if recorded and trail.entries[recorded - 1].hash != head_hash:
            raise AuditIntegrityError(
                f"{where} was rewritten: entry {recorded} is not the one recorded; restore it from backup"
            )
    if not config.audit_key:
        trail.warnings.append(
            f"the audit log is not keyed: set {AUDIT_KEY_ENV_VAR} so a rewritten log cannot be re-hashed"
        )
    for warning in trail.warnings:
        log.warning(warning)
    return trail


def _verify(config: PipelineConfig, numbered: list[tuple[int, str]], where: str) -> AuditTrail:
    """Check every entry's number, JSON, algorithm, link to the one before and hash; return them in order."""
    trail, previous = AuditTrail([]), ""
    for expected_number, (number, text) in enumerate(numbered, 1):
        if number != expected_number:
            raise AuditIntegrityError(
                f"{where} is missing entry {expected_number} (the next one is {number}): entries were removed; "
                "restore it from backup"
            )
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuditIntegrityError(f"{where} entry {number} is not JSON ({exc}): restore it from backup") from exc
        if not isinstance(entry, dict):
            raise AuditIntegrityError(
                f"{where} entry {number} is not an entry (a JSON {type(entry).__name__}): it was changed or written "
                "without the key; restore it from backup"
            )
        body = {k: v for k, v in entry.items() if k != "hash"}
        alg, expected = _digest(config, body)
        signed = entry.get("alg", "sha256")
        if signed != alg and config.audit_key:
            raise AuditIntegrityError(
                f"{where} entry {number} is not keyed ({signed}): it was changed or written without the key; "
                "restore it from backup"
            )
        if signed != alg:
            raise AuditIntegrityError(
                f"{where} entry {number} is signed with {signed}, but this process has no key to verify it: set "
                f"{AUDIT_KEY_ENV_VAR} (the Airflow Variable pipeline_audit_key) everywhere the pipeline runs"
            )
        if entry.get("previous_hash") != previous or not hmac.compare_digest(str(entry.get("hash")), expected):
            raise AuditIntegrityError(f"{where} was altered at entry {number}: restore it from backup")
        try:
            trail.entries.append(AuditEntry.model_validate(entry))
        except ValueError as exc:
            raise AuditIntegrityError(f"{where} entry {number} is not a valid entry: restore it from backup") from exc
        previous = entry["hash"]
    return trail


def _safe_url(config: PipelineConfig) -> str:
    url = config.history_url
    return url.split("@")[-1] if "@" in url else url


def read_audit(config: PipelineConfig) -> list[AuditEntry]:
    """Return every verified audit entry, oldest first (AuditIntegrityError if the log was tampered with)."""
    return read_trail(config).entries


@contextmanager
def audit_lock(config: PipelineConfig) -> Iterator[None]:
    """Serialise alias moves of the model (one promotion, rejection or rollback at a time), across machines.

    On a server database, a row of `audit_locks` is held FOR UPDATE by a transaction of its own until the block
    ends; a killed process's connection closes and frees it. SQLite is one machine's file: a file lock beside it.
    """
    db, name = database(config), config.model.registered_name
    if _HOLDING.get():  # already held by this process (a file log being moved in under an append)
        yield
        return
    token = _HOLDING.set(True)
    try:
        if db.dialect.name == "sqlite":
            with open(Path(db.url.database or "history.db").with_suffix(".audit.lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        try:
            with db.begin() as conn:
                conn.execute(AUDIT_LOCKS.insert().values(model_name=name))
        except sa.exc.IntegrityError:  # the row exists (the usual case)
            pass
        with db.connect() as conn, conn.begin():
            conn.execute(sa.select(AUDIT_LOCKS.c.model_name).where(AUDIT_LOCKS.c.model_name == name).with_for_update())
            yield
    finally:
        _HOLDING.reset(token)


def append(config: PipelineConfig, entry: AuditEntry) -> AuditEntry:
    """Append one entry (call under `audit_lock`): the entry and the new head are written in one transaction.

    The log sets `at`, the chain (`previous_hash`, `alg`, `hash`); the caller says what happened.
    """
    fields = {"action", "model", "from_version", "to_version", "reason", "approved_by", "airflow_run_id", "gate"}
    event = entry.model_dump(mode="json", include=fields | ({"note"} if entry.note else set()))
    trail = read_trail(config)
    previous = trail.entries[-1].hash if trail.entries else ""
    body = {
        "at": datetime.now(UTC).isoformat(),
        "previous_hash": previous,
        **event,
        "alg": "hmac-sha256" if config.audit_key else "sha256",
    }
    _, digest = _digest(config, body)
    written = {**body, "hash": digest}
    name, number = config.model.registered_name, len(trail.entries) + 1
    with database(config).begin() as conn:
        conn.execute(
            AUDIT_LOG.insert().values(model_name=name, seq=number, entry=json.dumps(written, default=str), hash=digest)
        )
        set_audit_head(conn, name, number, digest, _head_mac(config, name, number, digest))
    return AuditEntry.model_validate(written)


def seal_head(config: PipelineConfig) -> int:
    """Key the head record of a log whose entries verify (an upgrade from unkeyed heads); return its entry count.

    An operator's action after checking the log: it vouches that no entry is missing from its end.
    """
    if not config.audit_key:
        raise AuditIntegrityError(f"set {AUDIT_KEY_ENV_VAR} first: a head is sealed with the audit key")
    name = config.model.registered_name
    with audit_lock(config):
        with database(config).connect() as conn:
            rows = conn.execute(
                sa.select(AUDIT_LOG.c.seq, AUDIT_LOG.c.entry)
                .where(AUDIT_LOG.c.model_name == name)
                .order_by(AUDIT_LOG.c.seq)
            ).all()
        trail = _verify(config, [(int(seq), text) for seq, text in rows], f"the audit log of {name}")
        if not trail.entries:
            return 0
        last = trail.entries[-1].hash
        with database(config).begin() as conn:
            set_audit_head(conn, name, len(trail.entries), last, _head_mac(config, name, len(trail.entries), last))
    log.warning("sealed the audit log head of %s at %d entries", name, len(trail.entries))
    return len(trail.entries)


def _move_file_log_in(config: PipelineConfig) -> None:
    """Verify a JSON-lines log an earlier release kept under the data root, copy it into the database, set it aside."""
    path = config.audit_log_file
    if not path.exists():
        return
    with audit_lock(config):
        if not path.exists():  # another process moved it meanwhile
            return
        name = config.model.registered_name
        raw = path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a torn last line (a crash while writing) is left behind
        lines = complete.decode("utf-8", errors="replace").splitlines()
        trail = _verify(config, list(enumerate(lines, 1)), f"audit log file {path}")
        head = audit_head(config, name)
        if head is not None and (len(lines) < head[0] or (head[0] and trail.entries[head[0] - 1].hash != head[1])):
            raise AuditIntegrityError(
                f"audit log file {path} was truncated or rewritten: it holds {len(lines)} entries, the history database "
                f"recorded {head[0]}; restore it from backup"
            )
        with database(config).begin() as conn:
            if conn.execute(sa.select(AUDIT_LOG.c.seq).where(AUDIT_LOG.c.model_name == name).limit(1)).first():
                raise AuditIntegrityError(
                    f"both the database and {path} hold an audit log of {name}: keep the database's, and move the "
                    "file away after checking it"
                )
            for number, (line, entry) in enumerate(zip(lines, trail.entries, strict=True), 1):
                conn.execute(AUDIT_LOG.insert().values(model_name=name, seq=number, entry=line, hash=entry.hash))
            if trail.entries:
                last = trail.entries[-1].hash
                set_audit_head(conn, name, len(lines), last, _head_mac(config, name, len(lines), last))
        path.rename(path.with_name(path.name + ".moved-to-database"))
        log.warning("the audit log file %s (%d entries) was verified and moved into the database", path, len(lines))


def expected_champion(entries: list[AuditEntry]) -> AuditEntry | None:
    """Return the newest entry that moved `champion` (its `to_version` is the champion the log vouches for)."""
    return next((e for e in reversed(entries) if e.action in MOVES), None)


def former_champions(entries: list[AuditEntry]) -> list[str]:
    """Return the versions that were champion at some point, in order of first appearance."""
    return list(dict.fromkeys(e.to_version for e in entries if e.action in MOVES))
