"""One schema resolution for a partition, shared by validation, scoring, monitoring and training.

Every file of a partition must hold every configured column. Compatible types across files are
unified (int32/int64 -> int64, integers with floats -> float64, dictionary-encoded -> its values,
large/view strings -> string); numeric features are read as float64 and categorical features as
strings. An incompatible type is refused with the file and the column named.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from pipelines.column_kinds import (
    CATEGORICAL,
    NUMERIC,
    as_days,
    base_type,
    describe,
    is_number,
    is_temporal,
    kind_problem,
)
from pipelines.config import PipelineConfig
from pipelines.errors import PartitionSchemaError
from pipelines.lake import INCOMING, DataPath, parquet_file, partition_files, read_metadata

IDENTIFIER, TIMESTAMP, TARGET = "id", "timestamp", "target"


def column_roles(config: PipelineConfig, with_timestamp: bool = True) -> dict[str, str]:
    """Return the configured input columns of `incoming/` and what each one is, in read order."""
    roles = {config.id_column: IDENTIFIER}
    roles |= dict.fromkeys(config.features.numeric, NUMERIC)
    roles |= dict.fromkeys(config.features.categorical, CATEGORICAL)
    if with_timestamp and config.timestamp_column:
        roles[config.timestamp_column] = TIMESTAMP
    return roles


def _target_type(role: str, kinds: list[pa.DataType]) -> pa.DataType | str:
    """Return the unified type of a column with these per-file types, or a sentence saying why there is none."""
    known = [base_type(k) for k in kinds if not pa.types.is_null(k)]
    if role in (NUMERIC, CATEGORICAL):
        problems = [p for p in (kind_problem(role, k) for k in known) if p]
        return problems[0] if problems else (pa.float64() if role == NUMERIC else pa.string())
    if role in (IDENTIFIER, TARGET):
        if not known:
            return pa.int64() if role == TARGET else pa.string()
        if all(pa.types.is_integer(k) for k in known):
            return pa.int64()
        if all(pa.types.is_string(k) for k in known):
            return pa.string()
        if role == TARGET and all(is_number(k) for k in known):
            return pa.float64()
        kinds = sorted({describe(k) for k in known})
        if len(kinds) > 1:
            return "mixes " + " and ".join(kinds) + " across files"
        return f"is {kinds[0]}, but the {'id column' if role == IDENTIFIER else 'target'} needs integers or text"
    if role == TIMESTAMP:
        bad = [k for k in known if not (pa.types.is_timestamp(k) or pa.types.is_date(k))]
        if bad:
            return f"is {describe(bad[0])}, but the timestamp column needs a date or timestamp type"
        zones = {k.tz for k in known if pa.types.is_timestamp(k)}
        if len(zones) > 1:
            return f"mixes time zones {sorted(str(z) for z in zones)} across files"
        return pa.timestamp("us", tz=zones.pop() if zones else None)
    raise ValueError(f"unknown column role {role!r}")


@dataclass(frozen=True)
class PartitionSchema:
    """The files of one partition and the schema every batch read from them is cast to."""

    files: tuple[DataPath, ...]
    schema: pa.Schema

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def resolve(files: list[DataPath], roles: dict[str, str], where: str) -> PartitionSchema:
    """Read each file's footer and return the unified schema; raise PartitionSchemaError naming files and columns.

    `where` names the partition in messages (for example `incoming/ds=2026-10-01`).
    """
    failures: list[str] = []
    found: dict[str, list[tuple[DataPath, pa.Field]]] = {}
    rows = 0
    for file in files:
        try:
            footer = read_metadata(file)
            fields = {f.name: f.type for f in footer.schema.to_arrow_schema()}
        except (pa.ArrowException, OSError) as exc:
            failures.append(f"file {file.name} in {where} is not readable Parquet ({_first_line(exc)})")
            continue
        rows += footer.num_rows
        for column in roles:
            if column not in fields:
                failures.append(
                    f"required column {column!r} is missing in file {file.name} ({len(files)} file(s) in {where})"
                )
            else:
                found.setdefault(column, []).append((file, fields[column]))
    unified = []
    for column, role in roles.items():
        per_file = found.get(column)
        if not per_file:
            continue
        target = _target_type(role, [kind for _, kind in per_file])
        if isinstance(target, str):
            culprit = _culprit(role, per_file)
            failures.append(f"column {column!r} {target} (file {culprit.name}: {describe(dict(per_file)[culprit])})")
        else:
            unified.append(pa.field(column, target))
    if failures:
        raise PartitionSchemaError(
            f"partition {where} cannot be read as configured: " + "; ".join(failures), failures, rows
        )
    return PartitionSchema(tuple(files), pa.schema(unified))


def _culprit(role: str, per_file: list[tuple[DataPath, pa.DataType]]) -> DataPath:
    """Return the file whose type differs from the first file's (or the first file when that one is the odd one)."""
    first = base_type(per_file[0][1])
    for file, kind in per_file[1:]:
        if base_type(kind) != first:
            return file
    return per_file[0][0]


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def cast_batch(batch: pa.RecordBatch, schema: pa.Schema, file: DataPath) -> pa.RecordBatch:
    """Cast one record batch to the partition schema; a value that cannot be cast names its file and column."""
    columns = []
    for field in schema:
        column = batch.column(field.name)
        try:
            if is_temporal(column.type) and pa.types.is_floating(field.type):
                column = as_days(column)  # a date or timestamp as a numeric feature: days since 1970-01-01
            columns.append(column.cast(field.type) if column.type != field.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            message = f"column {field.name!r} in file {file.name} cannot be read as {field.type}: {_first_line(exc)}"
            raise PartitionSchemaError(message, [message]) from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def iter_batches(partition: PartitionSchema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream the partition's batches cast to its schema, row group by row group (pre-buffering off: bounded memory)."""
    for file in partition.files:
        try:
            reader = parquet_file(file, pre_buffer=False, buffer_size=1 << 20)
            batches = reader.iter_batches(batch_size=batch_rows, columns=partition.columns, use_threads=False)
            for batch in batches:
                yield cast_batch(batch, partition.schema, file)
        except (pa.ArrowException, OSError) as exc:
            message = f"file {file.name} cannot be read: {_first_line(exc)}"
            raise PartitionSchemaError(message, [message]) from exc


def read_table(partition: PartitionSchema, batch_rows: int = 65_536) -> pa.Table:
    """Read the whole partition into one table with the partition schema."""
    return pa.Table.from_batches(list(iter_batches(partition, batch_rows)), schema=partition.schema)


def incoming_partition(config: PipelineConfig, ds: str) -> PartitionSchema:
    """Resolve `incoming/ds=<ds>` against the configured columns (PartitionMissingError if it has no files)."""
    files = partition_files(config.data_root, INCOMING, ds)
    return resolve(files, column_roles(config), f"{INCOMING}/ds={ds}")
