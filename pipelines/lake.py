"""Partition I/O on the data root: Hive-style `<area>/ds=YYYY-MM-DD/` folders of Parquet files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import DataRootError, InvalidDateError, PartitionMissingError

log = logging.getLogger(__name__)
INCOMING, LABELS, PREDICTIONS, QUARANTINE, REPORTS = "incoming", "labels", "predictions", "quarantine", "reports"
MONITORING = "monitoring"  # the pipeline's own state under the data root: history DB, audit log, artifact cache
PREDICTIONS_FILE = "predictions.parquet"  # the one file of predictions/ds=...
QUARANTINE_RECORD = "validation.json"  # why quarantine/ds=... was refused
SUMMARY_FILE = "summary.json"  # reports/ds=.../summary.json: the night's machine-readable summary
SHARDS = "_shards"  # predictions/ds=.../_shards/<run>/: a sharded night's parts before the commit (hidden)
COMPARISONS = "models"  # reports/models/v<candidate>_vs_v<champion>/: the gate's comparisons
_DS_DIR = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")


def parse_ds(value: str | date) -> date:
    """Return the calendar date of a partition key; refuse anything that is not YYYY-MM-DD."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise InvalidDateError(f"partition date {value!r} is not a date in YYYY-MM-DD form")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidDateError(f"partition date {value!r} is not a calendar date: {exc}") from exc


def partition_date(requested: str | None, interval_start: datetime | None) -> str:
    """Return the partition date a run scores: the requested `ds`, else the day its data interval starts."""
    if requested:
        return parse_ds(requested).isoformat()
    if interval_start is None:
        raise InvalidDateError("this run has no data interval: trigger it with the `ds` Param (YYYY-MM-DD)")
    return interval_start.date().isoformat()


def partition_dir(data_root: Path, area: str, ds: str | date) -> Path:
    """Return `<data_root>/<area>/ds=<ds>` (the date is validated, so it can never be a path)."""
    return data_root / area / f"ds={parse_ds(ds).isoformat()}"


def data_files(folder: Path) -> list[Path]:
    """Return the visible files of a partition folder, sorted.

    Like Hive, Spark and pyarrow's dataset discovery, every file whose name does not start with `.` or `_`
    is data, whatever its extension (`part-0`, `x.PARQUET`); `_SUCCESS` markers and hidden temporary
    files are skipped. A visible file that is not Parquet is refused by validation with its name.
    """
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")) and p.is_file())


def partition_files(data_root: Path, area: str, ds: str | date) -> list[Path]:
    """Return the Parquet files of one partition; raise PartitionMissingError if there are none."""
    folder = partition_dir(data_root, area, ds)
    files = data_files(folder)
    if not files:
        raise PartitionMissingError(
            f"partition {folder} has no data files yet: wait for the upstream export or check the date"
        )
    return files


def list_partitions(data_root: Path, area: str) -> list[date]:
    """Return the dates of the partitions of an area that hold at least one Parquet file, sorted."""
    root = data_root / area
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _DS_DIR.match(child.name)
        if match and data_files(child):
            found.append(date.fromisoformat(match.group(1)))
    return sorted(found)


def earliest_partition(data_root: Path, area: str) -> date | None:
    """Return the earliest `ds=` folder of an area from one directory listing (cheap enough for DAG parse time)."""
    try:
        names = [match.group(1) for name in os.listdir(data_root / area) if (match := _DS_DIR.match(name))]
    except OSError:
        return None
    return date.fromisoformat(min(names)) if names else None


def partition_row_count(files: list[Path]) -> int:
    """Return the total row count from the Parquet footers (reads no data pages)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def file_digest(path: Path) -> str:
    """Return the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partition_digest(files: list[Path]) -> str:
    """Return one sha256 over the names and contents of a partition's files."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_digest(file)}\n".encode())
    return digest.hexdigest()


def temp_path_beside(target: Path) -> Path:
    """Return a hidden temporary path beside `target` (readers skip dot files); creates the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"


@contextmanager
def partition_write_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a partition folder we write, and drop what killed writers left in it.

    Two runs of one night wait for each other instead of racing; temporary files and staging folders
    of a writer that died (kill -9, a lost worker) are removed once the lock is ours, since no other
    writer of this folder can be alive then. The lock is released by the kernel if this process dies.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _remove_leftovers(folder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_leftover(path: Path) -> bool:
    """Return whether a path is a temporary file or staging/old folder that only an interrupted writer leaves."""
    return path.name.startswith(".") and any(mark in path.name for mark in (".tmp-", ".staging-", ".old-"))


def _remove_leftovers(folder: Path) -> None:
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


def publish(temp: Path, target: Path) -> None:
    """Atomically move a finished temporary file into place and drop other visible files of the folder."""
    os.replace(temp, target)
    for stale in target.parent.iterdir():
        if stale != target and stale.is_file() and not stale.name.startswith("."):
            stale.unlink()


def write_atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Let `write` fill a hidden temporary file beside `target`, then rename it into place (readers never see half)."""
    temp = temp_path_beside(target)
    try:
        write(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomic(target: Path, payload: Any) -> None:
    """Write JSON to `target` atomically (temporary file, then rename)."""
    write_atomic(target, lambda temp: temp.write_text(json.dumps(payload, indent=2, default=str)))


def write_table_atomic(target: Path, table: pa.Table) -> None:
    """Write one Parquet file atomically and make it the partition's only visible file."""
    temp = temp_path_beside(target)
    try:
        pq.write_table(table, temp, row_group_size=131_072)
        publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def wait_for_partition(config: Any, ds: str) -> tuple[bool, str]:
    """One look for `incoming/ds=<ds>` (the sensor's poke): whether it has arrived, and a sentence for the task log.

    Raises DataRootError when waiting cannot help: the data root is missing or not a folder, or the
    partition's path is a file.
    """
    root = config.data_root
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataRootError(
            f"data_root {root} {state}: fix data_root in the pipeline config "
            "(or mount the volume it lives on); waiting for a partition there cannot succeed"
        )
    folder = partition_dir(root, INCOMING, ds)
    if folder.exists() and not folder.is_dir():
        raise DataRootError(
            f"{folder} is a file, not a partition folder: move it aside and land the partition's files in a folder"
        )
    files = data_files(folder)
    if files:
        return True, f"partition {folder} has arrived ({len(files)} file(s): {', '.join(f.name for f in files[:5])})"
    return False, (
        f"partition {folder} has not arrived yet; waiting up to {config.partition_wait.timeout_minutes:g} "
        "minutes (partition_wait.timeout_minutes) before failing"
    )
