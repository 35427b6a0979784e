"""Writes no reader sees half of: hidden temporary files published whole, partition locks, leftovers of killed writers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.core.paths import DataPath, LakePath
from pipelines.storage.parquet import parquet_writer

log = logging.getLogger(__name__)
# On an object store no lock spans machines, so a hidden temporary key is only taken for a dead writer's once
# it is this old (a live writer finishes a partition long before).
LEFTOVER_AGE_SECONDS = 6 * 3600


def _replace(source: DataPath, target: DataPath) -> None:
    if isinstance(source, LakePath) and isinstance(target, LakePath):
        source.replace(target)
    else:
        os.replace(source, target)


def temp_path_beside(target: DataPath) -> DataPath:
    """Return a hidden temporary path beside `target` (readers skip dot files); creates the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"


@contextmanager
def partition_write_lock(folder: DataPath) -> Iterator[None]:
    """Hold an exclusive lock on a partition folder we write, and drop what killed writers left in it.

    Two runs of one night wait for each other instead of racing; temporary files and staging folders
    of a writer that died (kill -9, a lost worker) are removed once the lock is ours, since no other
    writer of this folder can be alive then. The lock is released by the kernel if this process dies.

    On an object store the lock is a local file keyed by the folder's URL: it holds between the runs of one
    machine only, so a hidden temporary key is removed only once it is LEFTOVER_AGE_SECONDS old, and two
    machines writing one night at once each publish a whole file (the last one stays).
    """
    if isinstance(folder, LakePath):
        locks = Path(tempfile.gettempdir()) / "nightly-ml-locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock_file = locks / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:24]}.lock"
    else:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = folder / ".lock"
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _remove_leftovers(folder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_leftover(path: DataPath) -> bool:
    """Return whether a path is a temporary file or staging/old folder that only an interrupted writer leaves."""
    return path.name.startswith(".") and any(mark in path.name for mark in (".tmp-", ".staging-", ".old-"))


def _remove_leftovers(folder: DataPath) -> None:
    if isinstance(folder, LakePath):
        cutoff = time.time() - LEFTOVER_AGE_SECONDS
        for key, info in folder.listing(recursive=True):
            if is_leftover(key) and key.is_file() and info.mtime is not None and info.mtime.timestamp() < cutoff:
                key.unlink(missing_ok=True)
                log.warning("removed %s left by an interrupted earlier run (%s bytes)", key, f"{info.size:,}")
        return
    for stale in folder.iterdir():
        if is_leftover(stale):
            size = stale.stat().st_size if stale.is_file() else 0
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
            log.warning("removed %s left by an interrupted earlier run (%s bytes)", stale, f"{size:,}")


def replace_folder(target: Path, build: Callable[[Path], None]) -> None:
    """Let `build` fill a hidden staging folder beside `target`, then swap it in for `target`.

    Readers see the old folder or the new one, never a mix of two runs; for the instant between the two
    renames the folder is absent. Call it under `partition_write_lock(target.parent)` so leftovers of a
    killed run are removed and two runs do not swap at once.
    """
    if isinstance(target, LakePath):
        raise TypeError(f"{target}: folders are swapped in on a local disk only (reports go to the report store)")
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        build(staging)
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(temp: DataPath, target: DataPath) -> None:
    """Atomically move a finished temporary file into place and drop other visible files of the folder."""
    _replace(temp, target)
    for stale in target.parent.iterdir():
        if stale != target and stale.is_file() and not stale.name.startswith("."):
            stale.unlink()


def write_atomic(target: DataPath, write: Callable[[Any], object]) -> None:
    """Let `write` fill a hidden temporary file beside `target`, then rename it into place (readers never see half)."""
    temp = temp_path_beside(target)
    try:
        write(temp)
        _replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomic(target: DataPath, payload: Any) -> None:
    """Write JSON to `target` atomically (temporary file, then rename)."""
    write_atomic(target, lambda temp: temp.write_text(json.dumps(payload, indent=2, default=str)))


def write_table_atomic(target: DataPath, table: pa.Table) -> None:
    """Write one Parquet file atomically and make it the partition's only visible file."""
    temp = temp_path_beside(target)
    try:
        with parquet_writer(temp, table.schema) as writer:
            writer.write_table(table, row_group_size=131_072)
        publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)
