"""Paths on the data root: a local folder or `s3://bucket/prefix`, and the lake's layout names.

The data root is a local folder or `s3://bucket/prefix` on an object store (S3 or a compatible one), read and
written through pyarrow's own S3 filesystem: a `LakePath` stands for a key there and offers the few pathlib
operations this module uses, so every step reads a partition the same way wherever it lives. S3 has no rename:
a file is written under a hidden temporary key and then copied to its final key in one server-side copy (a
single-object write, atomic on S3), so a reader sees the old file or the new one, never half of one, and the
hidden key is deleted. Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) or the
machine's role, never the YAML.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, Union

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


def remove_tree(folder: DataPath) -> None:
    """Delete a folder and everything in it, local or on the object store; a missing folder is fine."""
    if isinstance(folder, LakePath):
        folder.remove_tree()
    else:
        shutil.rmtree(folder, ignore_errors=True)
