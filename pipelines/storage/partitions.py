"""Partitions: `<area>/ds=YYYY-MM-DD/` folders, their dates, files, row counts and digests, and the wait for one."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, overload

from pipelines.core.errors import DataRootError, InvalidDateError, PartitionMissingError
from pipelines.core.paths import _DS_DIR, INCOMING, DataPath, LakePath
from pipelines.storage.parquet import read_metadata

log = logging.getLogger(__name__)


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


def partition_date(requested: str | None, interval_start: datetime | None, first: date | None = None) -> str:
    """Return the partition date a run scores: the requested `ds`, else the day its data interval starts.

    A night before `first` (the config's start_date) raises InvalidDateError saying so.
    """
    if requested:
        ds = parse_ds(requested)
    elif interval_start is None:
        raise InvalidDateError("this run has no data interval: trigger it with the `ds` Param (YYYY-MM-DD)")
    else:
        ds = interval_start.date()
    if first is not None and ds < first:
        raise InvalidDateError(
            f"ds={ds.isoformat()} is before the config's start_date {first.isoformat()}: no night before it is "
            "scored. Trigger a later ds, or move start_date back in the pipeline config"
        )
    return ds.isoformat()


@overload
def partition_dir(data_root: Path, area: str, ds: str | date) -> Path: ...
@overload
def partition_dir(data_root: LakePath, area: str, ds: str | date) -> LakePath: ...
@overload
def partition_dir(data_root: DataPath, area: str, ds: str | date) -> DataPath: ...
def partition_dir(data_root: DataPath, area: str, ds: str | date) -> DataPath:
    """Return `<data_root>/<area>/ds=<ds>` (the date is validated, so it can never be a path)."""
    return data_root / area / f"ds={parse_ds(ds).isoformat()}"


def data_files(folder: DataPath) -> list[DataPath]:
    """Return the visible files of a partition folder, sorted.

    Like Hive, Spark and pyarrow's dataset discovery, every file whose name does not start with `.` or `_`
    is data, whatever its extension (`part-0`, `x.PARQUET`); `_SUCCESS` markers and hidden temporary
    files are skipped. A visible file that is not Parquet is refused by validation with its name; a visible folder
    (`part-0.parquet/`) raises DataRootError naming it, so nothing waits for files that are never read.
    """
    visible: list[DataPath]
    if isinstance(folder, LakePath):  # one listing: no request per key
        visible = [p for p, _ in folder.listing() if p.name and _is_data_name(p.name)]
    elif not folder.is_dir():
        return []
    else:
        visible = [p for p in folder.iterdir() if _is_data_name(p.name)]
    folders = sorted(p.name for p in visible if not p.is_file())
    if folders:
        raise DataRootError(
            f"partition {folder} holds a folder where only data files belong ({', '.join(folders[:5])}/): a "
            "partition is one folder of Parquet files. Move the folder out (or give it a name starting with _ to "
            "have it skipped), then rerun this date"
        )
    return sorted(visible)


def _is_data_name(name: str) -> bool:
    return not name.startswith((".", "_"))


def partition_files(data_root: DataPath, area: str, ds: str | date) -> list[DataPath]:
    """Return the Parquet files of one partition; raise PartitionMissingError if there are none."""
    folder = partition_dir(data_root, area, ds)
    files = data_files(folder)
    if not files:
        raise PartitionMissingError(
            f"partition {folder} has no data files yet: wait for the upstream export or check the date"
        )
    return files


def list_partitions(data_root: DataPath, area: str) -> list[date]:
    """Return the dates of the partitions of an area that hold at least one Parquet file, sorted."""
    root = data_root / area
    if isinstance(root, LakePath):  # one recursive listing rather than one request per partition
        days = set()
        for path, _ in root.listing(recursive=True):
            rel = path.relative_to(root).parts
            if len(rel) == 2 and path.is_file() and _is_data_name(rel[1]) and (m := _DS_DIR.match(rel[0])):
                days.add(date.fromisoformat(m.group(1)))
        return sorted(days)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _DS_DIR.match(child.name)
        if match and _has_data(child):
            found.append(date.fromisoformat(match.group(1)))
    return sorted(found)


def _has_data(folder: DataPath) -> bool:
    """Whether a partition folder holds data files, or something visible that validation will refuse by name."""
    try:
        return bool(data_files(folder))
    except DataRootError:
        return True


def earliest_partition(data_root: DataPath, area: str) -> date | None:
    """Return the earliest `ds=` folder of an area from one directory listing (cheap enough for DAG parse time)."""
    try:
        children = [path.name for path in (data_root / area).iterdir()]
    except OSError:
        return None
    names = [match.group(1) for name in children if (match := _DS_DIR.match(name))]
    return date.fromisoformat(min(names)) if names else None


def partition_row_count(files: list[DataPath]) -> int:
    """Return the total row count from the Parquet footers (reads no data pages)."""
    return sum(read_metadata(f).num_rows for f in files)


def file_digest(path: DataPath) -> str:
    """Return the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partition_digest(files: list[DataPath]) -> str:
    """Return one sha256 over the names and contents of a partition's files."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_digest(file)}\n".encode())
    return digest.hexdigest()


def wait_for_partition(config: Any, ds: str) -> tuple[bool, str]:
    """One look for `incoming/ds=<ds>` (the sensor's poke): whether it has arrived, and a sentence for the task log.

    Raises DataRootError when waiting cannot help: the data root is missing or not a folder, or the
    partition's path is a file; PartitionMissingError for a night before the first partition of `incoming/`.
    """
    root = config.data_root
    if isinstance(root, LakePath):
        try:
            bucket_found = LakePath(root.bucket).is_dir()
        except OSError as exc:
            raise DataRootError(
                f"data_root {root}: the object store cannot be reached ({exc}); check AWS_ENDPOINT_URL and the "
                "keys in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            ) from exc
        if not bucket_found:
            raise DataRootError(
                f"data_root {root}: bucket {root.bucket!r} does not exist or these keys may not list it; fix "
                "data_root in the pipeline config or create the bucket; waiting for a partition there cannot succeed"
            )
    elif not root.is_dir():
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
    try:
        files = data_files(folder)
    except DataRootError as exc:  # it has arrived, wrongly shaped: validation quarantines it with this reason
        return True, f"partition {folder} has arrived, but cannot be read: {exc}"
    if files:
        return True, f"partition {folder} has arrived ({len(files)} file(s): {', '.join(f.name for f in files[:5])})"
    first = earliest_partition(root, INCOMING)
    if first is not None and parse_ds(ds) < first:
        raise PartitionMissingError(
            f"partition {folder} does not exist, and the data starts later: the earliest partition in {INCOMING}/ is "
            f"ds={first.isoformat()}, so no night before it is waited for. Trigger batch_scoring with the ds of a "
            "night that has data (or land this one and rerun)"
        )
    return False, (
        f"partition {folder} has not arrived yet; waiting up to {config.partition_wait.timeout_minutes:g} "
        "minutes (partition_wait.timeout_minutes) before failing"
    )
