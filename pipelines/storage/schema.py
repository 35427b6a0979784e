"""One schema resolution for a partition, shared by validation, scoring, monitoring and training.

Every file of a partition must hold every configured column. Compatible types across files are
unified (int32/int64 -> int64, integers with floats -> float64, dictionary-encoded -> its values,
large/view strings -> string); numeric features are read as float64 and categorical features as
strings. An incompatible type is refused with the file and the column named.

Memory is bounded by what the values hold, not only by the row count: text whose values repeat is read as a
dictionary (a long value repeated on every row is decoded once), each file's batches are sized from its footer to about
BATCH_BYTES, and a text value longer than the partition's `max_chars` is cut there (and marked with an ellipsis)
before anything else sees it; validation reports the longest value of each column and the rows each file really
held (`ReadTally`). A column chunk above MAX_CHUNK_BYTES uncompressed (Parquet decodes a page whole) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.column_kinds import (
    CATEGORICAL,
    NUMERIC,
    as_days,
    base_type,
    describe,
    is_number,
    is_temporal,
    kind_problem,
)
from pipelines.core.config import PipelineConfig
from pipelines.core.errors import ConfigError, DataRootError, PartitionSchemaError
from pipelines.core.paths import INCOMING, DataPath
from pipelines.storage.parquet import parquet_file, read_metadata, read_schema
from pipelines.storage.partitions import data_files, earliest_partition, partition_files

IDENTIFIER, TIMESTAMP, TARGET = "id", "timestamp", "target"
# About how many bytes of (uncompressed) column data one record batch holds; a file of wide rows gets fewer rows
BATCH_BYTES = 32 << 20
# The most uncompressed bytes one column of one row group may hold: a page is decompressed whole when read
MAX_CHUNK_BYTES = 512 << 20
# A dictionary-encoded text chunk is read as a dictionary (decoding it densely could multiply one long value by every
# row) when it averages fewer bytes per value than this (values repeat) or is small (its dictionary is bounded by it);
# larger chunks of long values are mostly distinct values past the writer's dictionary limit, cheaper read plain
DICTIONARY_BYTES_PER_VALUE = 64
DICTIONARY_CHUNK_BYTES = 16 << 20
DEFAULT_MAX_CHARS = 1000
CUT_MARK = "\u2026"  # ends a value that was cut at max_chars


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
    max_chars: int = DEFAULT_MAX_CHARS  # a longer text value is cut to this many characters when read
    footer_rows: tuple[int, ...] = ()  # the row count each file's footer claims, in the order of `files`

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def project(self, columns: list[str]) -> PartitionSchema:
        """The same files read with only these columns."""
        return PartitionSchema(
            self.files, pa.schema([self.schema.field(c) for c in columns]), self.max_chars, self.footer_rows
        )


@dataclass
class ReadTally:
    """What a read saw: the longest text value per column and file (characters, before any cut) and the rows each
    file really held (to hold against its footer)."""

    longest: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, column: str, file: str, length: int) -> None:
        if length > self.longest.get((column, file), -1):
            self.longest[(column, file)] = length

    def over(self, limit: int) -> list[tuple[str, str, int]]:
        """(column, file, longest) of each column and file whose longest value is above `limit`."""
        return sorted((c, f, n) for (c, f), n in self.longest.items() if n > limit)


def resolve(
    files: list[DataPath], roles: dict[str, str], where: str, max_chars: int = DEFAULT_MAX_CHARS
) -> PartitionSchema:
    """Read each file's footer and return the unified schema; raise PartitionSchemaError naming files and columns.

    `where` names the partition in messages (for example `incoming/ds=2026-10-01`).
    """
    failures: list[str] = []
    found: dict[str, list[tuple[DataPath, pa.Field]]] = {}
    rows, footer_rows = 0, []
    for file in files:
        try:
            footer = read_metadata(file)
            fields = {f.name: f.type for f in footer.schema.to_arrow_schema()}
        except (pa.ArrowException, OSError) as exc:
            failures.append(f"file {file.name} in {where} is not readable Parquet ({_first_line(exc)})")
            continue
        rows += footer.num_rows
        footer_rows.append(footer.num_rows)
        failures += _oversized_chunks(footer, set(roles), f"file {file.name} in {where}")
        in_groups = sum(footer.row_group(i).num_rows for i in range(footer.num_row_groups))
        if in_groups != footer.num_rows:
            failures.append(
                f"file {file.name} in {where} is damaged: its footer claims {footer.num_rows:,} rows but its row "
                f"groups hold {in_groups:,}; rewrite the file"
            )
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
    return PartitionSchema(tuple(files), pa.schema(unified), max_chars, tuple(footer_rows))


def _oversized_chunks(footer: object, columns: set[str], where: str) -> list[str]:
    """Column chunks too big to decode within a task's memory (a page is decompressed whole), in words."""
    found = []
    for index in range(footer.num_row_groups):  # type: ignore[attr-defined]
        group = footer.row_group(index)  # type: ignore[attr-defined]
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.path_in_schema in columns and chunk.total_uncompressed_size > MAX_CHUNK_BYTES:
                found.append(
                    f"column {chunk.path_in_schema!r} of row group {index} in {where} holds "
                    f"{chunk.total_uncompressed_size / 2**20:,.0f} MB uncompressed, more than one read may decode "
                    f"({MAX_CHUNK_BYTES >> 20} MB): rewrite the file with smaller row groups"
                )
                return found
    return found


def _culprit(role: str, per_file: list[tuple[DataPath, pa.DataType]]) -> DataPath:
    """Return the file whose type differs from the first file's (or the first file when that one is the odd one)."""
    first = base_type(per_file[0][1])
    for file, kind in per_file[1:]:
        if base_type(kind) != first:
            return file
    return per_file[0][0]


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _cut(values: pa.Array, lengths: pa.Array, max_chars: int) -> pa.Array:
    """Text values with those above `max_chars` characters cut to it and marked."""
    long = pc.greater(lengths, max_chars)
    cut = pc.binary_join_element_wise(pc.utf8_slice_codeunits(values, 0, max_chars), CUT_MARK, "")
    return pc.if_else(long, cut, values)


def _capped(column: pa.Array, name: str, file: DataPath, max_chars: int, tally: ReadTally | None) -> pa.Array:
    """A text column (dictionary-encoded or not) with every value cut to `max_chars`; others as they are."""
    encoded = pa.types.is_dictionary(column.type)
    values = column.dictionary if encoded else column
    if not _text(values.type) or len(column) == 0:
        return column
    per_value = pc.utf8_length(values)
    used = pc.take(per_value, column.indices) if encoded else per_value
    longest = pc.max(used).as_py()
    if longest is None:
        return column
    if tally is not None:
        tally.add(name, file.name, longest)
    if longest <= max_chars:
        return column
    if encoded:
        return pa.DictionaryArray.from_arrays(column.indices, _cut(values, per_value, max_chars))
    return _cut(values, per_value, max_chars)


def cast_batch(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    file: DataPath,
    max_chars: int = DEFAULT_MAX_CHARS,
    tally: ReadTally | None = None,
) -> pa.RecordBatch:
    """Cast one record batch to the partition schema, text cut to `max_chars`; a value that cannot be cast names its
    file and column. `tally`, when given, learns each text column's longest value before the cut."""
    columns = []
    for field_ in schema:
        column = _capped(batch.column(field_.name), field_.name, file, max_chars, tally)
        try:
            if is_temporal(column.type) and pa.types.is_floating(field_.type):
                column = as_days(column)  # a date or timestamp as a numeric feature: days since 1970-01-01
            columns.append(column.cast(field_.type) if column.type != field_.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            message = f"column {field_.name!r} in file {file.name} cannot be read as {field_.type}: {_first_line(exc)}"
            raise PartitionSchemaError(message, [message]) from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def batch_rows_for(metadata: object, columns: list[str], batch_rows: int, row_groups: list[int] | None = None) -> int:
    """How many rows of these columns make about BATCH_BYTES (at most `batch_rows`), from the footer's sizes."""
    names, widest = set(columns), 0.0
    for index in range(metadata.num_row_groups) if row_groups is None else row_groups:  # type: ignore[attr-defined]
        group = metadata.row_group(index)  # type: ignore[attr-defined]
        if group.num_rows:
            size = sum(
                group.column(j).total_uncompressed_size
                for j in range(group.num_columns)
                if group.column(j).path_in_schema in names
            )
            widest = max(widest, size / group.num_rows)
    return max(1, min(batch_rows, int(BATCH_BYTES // max(widest, 1.0))))


def _repeated_text(footer: object, text: set[str]) -> list[str]:
    """The text columns to read as dictionaries: every chunk dictionary-encoded, and repeated or small."""
    found: dict[str, bool] = {}
    for index in range(footer.num_row_groups):  # type: ignore[attr-defined]
        group = footer.row_group(index)  # type: ignore[attr-defined]
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.path_in_schema in text:
                size = chunk.total_uncompressed_size
                repeated = (
                    size / max(chunk.num_values, 1) < DICTIONARY_BYTES_PER_VALUE or size <= DICTIONARY_CHUNK_BYTES
                )
                found[chunk.path_in_schema] = found.get(chunk.path_in_schema, True) and (
                    chunk.has_dictionary_page and repeated
                )
    return sorted(c for c, dictionary in found.items() if dictionary)


def file_batches(
    partition: PartitionSchema,
    file: DataPath,
    batch_rows: int,
    row_groups: list[int] | None = None,
    tally: ReadTally | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one file's batches cast to the partition schema (pre-buffering off, repeated text read as dictionaries,
    batches sized by bytes, values cut): memory bounded whatever the rows and the values hold."""
    text = {f.name for f in partition.schema if _text(f.type)}
    try:
        footer = read_metadata(file)  # read once: the reader takes it instead of fetching it again
        # each column read holds a buffer of this size: 1 MB up to 64 columns, less for a wide table (1,000 columns
        # with 1 MB each held a gigabyte), never below 64 kB
        buffer = max(64 << 10, min(1 << 20, (64 << 20) // max(len(partition.columns), 1)))
        reader = parquet_file(
            file, metadata=footer, pre_buffer=False, buffer_size=buffer, read_dictionary=_repeated_text(footer, text)
        )
        rows = batch_rows_for(footer, partition.columns, batch_rows, row_groups)
        groups = list(range(footer.num_row_groups)) if row_groups is None else row_groups
        if len(partition.columns) > WIDE_COLUMNS and all(
            footer.row_group(g).total_byte_size <= WIDE_GROUP_BYTES for g in groups
        ):
            batches = _wide_batches(reader, partition.columns, groups, rows)
        else:
            batches = reader.iter_batches(
                batch_size=rows, row_groups=row_groups, columns=partition.columns, use_threads=False
            )
        for batch in batches:
            if tally is not None:
                tally.rows[file.name] = tally.rows.get(file.name, 0) + batch.num_rows
            yield cast_batch(batch, partition.schema, file, partition.max_chars, tally)
    except (pa.ArrowException, OSError) as exc:
        message = f"file {file.name} cannot be read: {_first_line(exc)}"
        raise PartitionSchemaError(message, [message]) from exc


# A reader streaming rows holds the current page of every column it reads: at 1,000 columns that is several times
# the row group itself. A wide file whose row groups are modest is read instead a row group at a time, its columns
# WIDE_COLUMNS at a time, and then cut into batches: the row group once in memory, not its pages twice per column.
WIDE_COLUMNS = 128
WIDE_GROUP_BYTES = 256 << 20


def _wide_batches(reader: Any, columns: list[str], groups: list[int], rows: int) -> Iterator[pa.RecordBatch]:
    for group in groups:
        parts = [
            reader.read_row_group(group, columns=columns[start : start + WIDE_COLUMNS], use_threads=False)
            for start in range(0, len(columns), WIDE_COLUMNS)
        ]
        table = pa.Table.from_arrays(
            [chunk for part in parts for chunk in part.columns], names=[n for part in parts for n in part.column_names]
        )
        del parts
        yield from table.combine_chunks().to_batches(max_chunksize=rows)
        del table


def iter_batches(
    partition: PartitionSchema, batch_rows: int, tally: ReadTally | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream the partition's batches cast to its schema, file by file (see `file_batches`)."""
    for file in partition.files:
        yield from file_batches(partition, file, batch_rows, tally=tally)


def read_table(partition: PartitionSchema, batch_rows: int = 65_536, tally: ReadTally | None = None) -> pa.Table:
    """Read the whole partition into one table with the partition schema."""
    return pa.Table.from_batches(list(iter_batches(partition, batch_rows, tally)), schema=partition.schema)


def incoming_partition(config: PipelineConfig, ds: str) -> PartitionSchema:
    """Resolve `incoming/ds=<ds>` against the configured columns (PartitionMissingError if it has no files)."""
    try:
        files = partition_files(config.data_root, INCOMING, ds)
    except DataRootError as exc:  # a folder where data files belong: the partition is broken, the others go on
        raise PartitionSchemaError(str(exc), [str(exc)]) from exc
    return resolve(files, column_roles(config), f"{INCOMING}/ds={ds}", config.validation.max_value_chars)


def check_feature_kinds(config: PipelineConfig) -> None:
    """Raise ConfigError naming the features listed under a kind their type in the data cannot be.

    Read from one footer of the earliest incoming partition (the data a model is first trained on speaks for the
    column types; a later partition whose types differ is quarantined by validation instead). It reads the data,
    so it runs in the first task that reads it (validation, the training window), never when the config is loaded:
    loading a config reads the YAML and nothing else, so parsing a DAG file touches no storage.
    """
    conflicts = kind_conflicts(config)
    if conflicts:
        raise ConfigError("invalid pipeline config (features):\n" + "\n".join(f"  {c}" for c in conflicts))


def kind_conflicts(config: PipelineConfig) -> list[str]:
    """Return the features listed under a kind their type in the data cannot be (read from one file's footer).

    No data yet: nothing to check.
    """
    first = earliest_partition(config.data_root, INCOMING)  # one listing and one footer
    if first is None:
        return []
    try:
        file = data_files(config.data_root / INCOMING / f"ds={first.isoformat()}")[0]
        types = {f.name: f.type for f in read_schema(file)}
    except (OSError, IndexError, ValueError):  # unreadable data is validation's business, not the config's
        return []
    where = f"{INCOMING}/ds={first.isoformat()}/{file.name}"
    conflicts = []
    for kind, columns in (("numeric", config.features.numeric), ("categorical", config.features.categorical)):
        for column in columns:
            problem = kind_problem(kind, types[column]) if column in types else None
            if problem:
                conflicts.append(f"features.{kind}: column {column!r} {problem} (its type in {where})")
    return conflicts
