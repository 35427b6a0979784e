"""The audit log of alias moves: append-only JSON lines, each keyed-hashed over the one before.

Integrity holds against three things: a rewritten entry (every entry carries an HMAC-SHA256 of its
body and the previous entry's hash, keyed with the Airflow Variable `pipeline_audit_key`, so
recomputing the chain needs the key), truncation (the entry count and head hash are also kept in
the history database) and a crash mid-append (a torn last line is reported, and cut off under the
lock before the next entry is written). Entries are written before the alias moves they describe,
so an interrupted move is finished by the next holder of the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from pipelines import history
from pipelines.config import AUDIT_KEY_ENV_VAR, PipelineConfig
from pipelines.contracts import AuditEntry
from pipelines.errors import AuditIntegrityError

log = logging.getLogger(__name__)
MOVES = ("bootstrap", "promote", "rollback", "restore")  # the actions that point `champion` at `to_version`


@dataclass
class AuditTrail:
    """The verified entries, oldest first, and what the reader should be told about the file."""

    entries: list[AuditEntry]
    warnings: list[str] = field(default_factory=list)
    torn_bytes: int = 0


def _digest(config: PipelineConfig, body: dict[str, Any]) -> tuple[str, str]:
    payload = json.dumps(body, sort_keys=True, default=str).encode()
    if config.audit_key:
        return "hmac-sha256", hmac.new(config.audit_key.encode(), payload, hashlib.sha256).hexdigest()
    return "sha256", hashlib.sha256(payload).hexdigest()


def read_trail(config: PipelineConfig) -> AuditTrail:
    """Read and verify the audit log; raise AuditIntegrityError if it was truncated, rewritten or cannot be verified."""
    path, name = config.audit_log, config.model.registered_name
    raw = path.read_bytes() if path.exists() else b""
    cut = raw.rfind(b"\n") + 1  # everything after the last newline is a torn append
    complete, torn = raw[:cut], raw[cut:]
    trail, previous = AuditTrail([]), ""
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditIntegrityError(
                f"audit log {path} line {number} is not JSON ({exc}): restore the log from backup"
            ) from exc
        body = {k: v for k, v in entry.items() if k != "hash"}
        alg, expected = _digest(config, body)
        if entry.get("alg", "sha256") != alg:
            raise AuditIntegrityError(
                f"audit log {path} line {number} is signed with {entry.get('alg', 'sha256')}, but this process "
                f"verifies {alg}: set the same {AUDIT_KEY_ENV_VAR} (the Airflow Variable pipeline_audit_key) "
                "everywhere the pipeline runs"
            )
        if entry.get("previous_hash") != previous or not hmac.compare_digest(str(entry.get("hash")), expected):
            raise AuditIntegrityError(f"audit log {path} was altered at line {number}: restore it from backup")
        trail.entries.append(AuditEntry.model_validate(entry))
        previous = entry["hash"]
    head = history.audit_head(config, name)
    count = len(trail.entries)
    if head is None and count:
        raise AuditIntegrityError(
            f"audit log {path} holds {count} entries, but the history database ({_safe_url(config)}) has no record of "
            "its head: the log was copied in or the database replaced; restore both from the same backup"
        )
    if head is not None:
        recorded, head_hash = head
        if count < recorded:
            raise AuditIntegrityError(
                f"audit log {path} was truncated: it holds {count} entries, the history database recorded {recorded}; "
                "restore it from backup"
            )
        if recorded and trail.entries[recorded - 1].hash != head_hash:
            raise AuditIntegrityError(
                f"audit log {path} was rewritten: entry {recorded} is not the one recorded; restore it from backup"
            )
    if torn:
        trail.torn_bytes = len(torn)
        trail.warnings.append(
            f"the last line of {path} is incomplete ({len(torn)} bytes: a crash while writing); the {count} entries "
            "before it are intact, and the torn line is removed before the next entry is written"
        )
    if not config.audit_key:
        trail.warnings.append(
            f"the audit log is not keyed: set {AUDIT_KEY_ENV_VAR} so a rewritten log cannot be re-hashed"
        )
    for warning in trail.warnings:
        log.warning(warning)
    return trail


def _safe_url(config: PipelineConfig) -> str:
    url = config.history_url
    return url.split("@")[-1] if "@" in url else url


def read_audit(config: PipelineConfig) -> list[AuditEntry]:
    """Return every verified audit entry, oldest first (AuditIntegrityError if the log was tampered with)."""
    return read_trail(config).entries


@contextmanager
def audit_lock(config: PipelineConfig) -> Iterator[None]:
    """Serialise alias moves across processes on this machine (one promotion, rejection or rollback at a time)."""
    config.audit_log.parent.mkdir(parents=True, exist_ok=True)
    with open(config.audit_log.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append(config: PipelineConfig, event: dict[str, Any]) -> AuditEntry:
    """Append one entry (call under `audit_lock`): cut a torn last line, write and fsync, then record the new head."""
    event = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in event.items()}
    trail = read_trail(config)
    path = config.audit_log
    if trail.torn_bytes:
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size - trail.torn_bytes)
        event = {**event, "note": f"a torn last line ({trail.torn_bytes} bytes) was removed before this entry"}
    previous = trail.entries[-1].hash if trail.entries else ""
    body = {
        "at": datetime.now(UTC).isoformat(),
        "previous_hash": previous,
        **event,
        "alg": "hmac-sha256" if config.audit_key else "sha256",
    }
    _, digest = _digest(config, body)
    entry = {**body, "hash": digest}
    with open(path, "ab") as handle:
        handle.write((json.dumps(entry, default=str) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())
    history.set_audit_head(config, config.model.registered_name, len(trail.entries) + 1, digest)
    return AuditEntry.model_validate(entry)


def expected_champion(entries: list[AuditEntry]) -> AuditEntry | None:
    """Return the newest entry that moved `champion` (its `to_version` is the champion the log vouches for)."""
    return next((e for e in reversed(entries) if e.action in MOVES), None)


def former_champions(entries: list[AuditEntry]) -> list[str]:
    """Return the versions that were champion at some point, in order of first appearance."""
    return list(dict.fromkeys(e.to_version for e in entries if e.action in MOVES))
