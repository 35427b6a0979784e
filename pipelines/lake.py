"""Partition I/O on the data root: Hive-style `<area>/ds=YYYY-MM-DD/` folders of Parquet files.

The data root is a local folder or `s3://bucket/prefix` on an object store (S3 or a compatible one), read and
written through pyarrow's own S3 filesystem: a `LakePath` stands for a key there and offers the few pathlib
operations this module uses, so every step reads a partition the same way wherever it lives. S3 has no rename:
a file is written under a hidden temporary key and then copied to its final key in one server-side copy (a
single-object write, atomic on S3), so a reader sees the old file or the new one, never half of one, and the
hidden key is deleted. Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) or the
machine's role, never the YAML.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Union, overload

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
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
# On an object store no lock spans machines, so a hidden temporary key is only taken for a dead writer's once
# it is this old (a live writer finishes a partition long before).
LEFTOVER_AGE_SECONDS = 6 * 3600
_FILESYSTEMS: dict[tuple[str, ...], Any] = {}


def s3_filesystem() -> Any:
    """pyarrow's S3 filesystem from the environment (one per process and environment): endpoint, region, keys."""
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # per process too: a filesystem made before a fork (its connections, its threads) is not used after it
    keys = (os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_PROFILE", ""))
    marker = (str(os.getpid()), endpoint, region, *keys)
    if marker not in _FILESYSTEMS:
        options: dict[str, Any] = {"region": region}
        if endpoint:
            options["endpoint_override"] = endpoint
            options["scheme"] = "https" if endpoint.startswith("https") else "http"
        _FILESYSTEMS[marker] = fs.S3FileSystem(**options)
    return _FILESYSTEMS[marker]


class LakePath:
    """A key on an object store, `s3://bucket/key`, with the pathlib operations the lake uses.

    Object stores have no folders: a "folder" exists while keys lie under it, `mkdir` does nothing, and a rename
    is a server-side copy and a delete (see `replace`).
    """

    __slots__ = ("_kind", "bucket", "key")

    def __init__(self, bucket: str, key: str = "", _kind: str | None = None) -> None:
        self.bucket, self.key, self._kind = bucket, key.strip("/"), _kind

    @classmethod
    def from_url(cls, url: str) -> LakePath:
        """Parse `s3://bucket/prefix`; refuse another scheme, a credential, a bad bucket name or `..`."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"{url!r}: expected s3://bucket/prefix")
        if "@" in parts.netloc:
            raise ValueError(
                "the URL holds a credential: remove it, and give the object store's keys in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the machine's role"
            )
        if parts.query or parts.fragment or not _BUCKET.match(parts.netloc):
            raise ValueError(f"{url!r}: expected s3://bucket/prefix with a valid bucket name")
        key = parts.path.strip("/")
        if key and (not _KEY.match(key) or ".." in key.split("/")):
            raise ValueError(f"{url!r}: the prefix may hold letters, digits and . _ = - / only")
        return cls(parts.netloc, key)

    @property
    def fs(self) -> Any:
        return s3_filesystem()

    @property
    def arrow_path(self) -> str:
        """The path pyarrow's S3 filesystem takes: `bucket/key`."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def __str__(self) -> str:
        return f"s3://{self.arrow_path}"

    def __fspath__(self) -> str:  # pyarrow and pandas read `s3://` URLs with pyarrow's filesystem
        return str(self)

    def __repr__(self) -> str:
        return f"LakePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LakePath) and (self.bucket, self.key) == (other.bucket, other.key)

    def __hash__(self) -> int:
        return hash((self.bucket, self.key))

    def __lt__(self, other: LakePath) -> bool:
        return (self.bucket, self.key) < (other.bucket, other.key)

    def __truediv__(self, part: str) -> LakePath:
        pieces = [p for p in str(part).split("/") if p]
        if any(p in (".", "..") for p in pieces):
            raise ValueError(f"{part!r} is not a key under {self}")
        return LakePath(self.bucket, "/".join([self.key, *pieces]) if self.key else "/".join(pieces))

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> LakePath:
        return LakePath(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    def relative_to(self, other: LakePath) -> PurePosixPath:
        if self.bucket != other.bucket or not (self.key + "/").startswith(other.key + "/" if other.key else ""):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key[len(other.key) :].lstrip("/") or ".")

    def resolve(self) -> LakePath:
        return self

    def _type(self) -> str:
        if self._kind is None:
            from pyarrow import fs

            info = self.fs.get_file_info(self.arrow_path)
            return {fs.FileType.File: "file", fs.FileType.Directory: "dir"}.get(info.type, "none")
        return self._kind

    def exists(self) -> bool:
        return self._type() != "none"

    def is_dir(self) -> bool:
        return self._type() == "dir"

    def is_file(self) -> bool:
        return self._type() == "file"

    def listing(self, recursive: bool = False) -> list[tuple[LakePath, Any]]:
        """The keys under this folder (one listing request per 1,000 keys) with their pyarrow FileInfo."""
        from pyarrow import fs

        selector = fs.FileSelector(self.arrow_path, allow_not_found=True, recursive=recursive)
        found = []
        for info in self.fs.get_file_info(selector):
            kind = "file" if info.type == fs.FileType.File else "dir"
            bucket, _, key = info.path.partition("/")
            found.append((LakePath(bucket, key, kind), info))
        return found

    def iterdir(self) -> Iterator[LakePath]:
        return iter([path for path, _ in self.listing()])

    def stat(self) -> os.stat_result:
        """Size and modification time (the object's Last-Modified); the other fields are 0."""
        from pyarrow import fs

        info = self.fs.get_file_info(self.arrow_path)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        mtime_ns = info.mtime_ns or 0
        seconds = mtime_ns // 10**9
        fields = (0, 0, 0, 0, 0, 0, info.size or 0, seconds, seconds, 0)
        return os.stat_result(fields, {"st_mtime_ns": mtime_ns})

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a folder on an object store is the keys under it."""

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A binary stream: `rb` reads the object, `wb` writes it whole (an object store has no appends)."""
        if mode == "rb":
            return self.fs.open_input_file(self.arrow_path)
        if mode == "wb":
            return self.fs.open_output_stream(self.arrow_path)
        raise ValueError(f"mode {mode!r} is not supported on an object store: use rb or wb")

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.arrow_path) as stream:
            return bytes(stream.read())

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.arrow_path) as stream:
            stream.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.arrow_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def replace(self, target: LakePath) -> None:
        """Copy this key to `target` in one server-side copy (atomic on S3), then delete this one."""
        self.fs.move(self.arrow_path, target.arrow_path)

    def remove_tree(self) -> None:
        """Delete every key under this folder, and the folder's own marker."""
        if self.key and self.is_dir():
            self.fs.delete_dir(self.arrow_path)


DataPath = Union[Path, LakePath]  # noqa: UP007  (a runtime alias pydantic and isinstance read)


def data_path(value: str | Path | LakePath) -> DataPath:
    """A path on the data root from its text form: `s3://...` on the object store, anything else local."""
    if isinstance(value, (Path, LakePath)):
        return value
    return LakePath.from_url(value) if value.startswith("s3://") else Path(value)


def _replace(source: DataPath, target: DataPath) -> None:
    if isinstance(source, LakePath) and isinstance(target, LakePath):
        source.replace(target)
    else:
        os.replace(source, target)


def remove_tree(folder: DataPath) -> None:
    """Delete a folder and everything in it, local or on the object store; a missing folder is fine."""
    if isinstance(folder, LakePath):
        folder.remove_tree()
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _arrow(path: DataPath) -> tuple[Any, Any]:
    """What pyarrow's Parquet functions take for a path: (where, filesystem); a local path needs no filesystem."""
    return (path.arrow_path, path.fs) if isinstance(path, LakePath) else (path, None)


def parquet_file(path: DataPath, **options: Any) -> pq.ParquetFile:
    """Open a Parquet file for reading (pyarrow's S3 filesystem for an object-store key).

    On an object store every read is a request, so the column chunks of a row group are fetched together
    (`pre_buffer`): 10x faster than 1 MB buffered reads against a local S3 server, for one row group's memory.
    """
    if isinstance(path, LakePath):
        options.update(pre_buffer=True, buffer_size=0)
    where, filesystem = _arrow(path)
    return pq.ParquetFile(where, filesystem=filesystem, **options)


def read_metadata(path: DataPath) -> Any:
    """A Parquet file's footer."""
    where, filesystem = _arrow(path)
    return pq.read_metadata(where, filesystem=filesystem)


def read_schema(path: DataPath) -> pa.Schema:
    """A Parquet file's Arrow schema (from its footer)."""
    where, filesystem = _arrow(path)
    return pq.read_schema(where, filesystem=filesystem)


def read_parquet(path: DataPath, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table (no Hive partition columns added)."""
    return parquet_file(path).read(columns=columns)


def parquet_writer(path: DataPath, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
    """A Parquet writer onto `path` (a hidden temporary path: publish it when it is whole)."""
    where, filesystem = _arrow(path)
    return pq.ParquetWriter(where, schema, filesystem=filesystem, **options)


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
