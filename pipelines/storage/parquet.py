"""Parquet files on the data root, local or on the object store: open, footer, schema, read, write."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.paths import DataPath, LakePath

log = logging.getLogger(__name__)


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
