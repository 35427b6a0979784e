"""Which Parquet column types can be which kind of feature (used when the config is loaded and when a partition is read)."""

from __future__ import annotations

import pyarrow as pa

NUMERIC, CATEGORICAL = "numeric", "categorical"
SECONDS_PER_DAY = 86_400


def base_type(kind: pa.DataType) -> pa.DataType:
    """Return the type a column's values have once decoded (dictionary -> values, large/view strings -> string)."""
    if pa.types.is_dictionary(kind):
        return base_type(kind.value_type)
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    return kind


def describe(kind: pa.DataType) -> str:
    return str(base_type(kind))


def is_number(kind: pa.DataType) -> bool:
    kind = base_type(kind)
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
    )


def is_temporal(kind: pa.DataType) -> bool:
    kind = base_type(kind)
    return pa.types.is_date(kind) or pa.types.is_timestamp(kind)


def kind_problem(kind_of_feature: str, kind: pa.DataType) -> str | None:
    """Return why a column of this type cannot be this kind of feature, or None when it can.

    Numeric: numbers, booleans (0/1), dates and timestamps (days since 1970-01-01). Categorical: text,
    integers and booleans. A float or a date as a category, or text as a number, makes no sense.
    """
    kind = base_type(kind)
    if pa.types.is_null(kind):
        return None
    if kind_of_feature == NUMERIC:
        if is_number(kind) or is_temporal(kind):
            return None
        return f"is {describe(kind)}, but numeric features need a number, boolean, date or timestamp type"
    if kind_of_feature == CATEGORICAL:
        if (
            pa.types.is_string(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_binary(kind)
        ):
            return None
        hint = " (list it under features.numeric)" if is_number(kind) or is_temporal(kind) else ""
        return f"is {describe(kind)}, but categorical features need text, integer or boolean values{hint}"
    raise ValueError(f"unknown feature kind {kind_of_feature!r}")


def as_days(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Return a date or timestamp column as float64 days since 1970-01-01 (UTC for zoned timestamps)."""
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_date32(kind):
        return column.cast(pa.int32()).cast(pa.float64())
    per_day = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
    if pa.types.is_date64(kind):
        return pc.divide(column.cast(pa.int64()).cast(pa.float64()), SECONDS_PER_DAY * 1_000.0)
    return pc.divide(column.cast(pa.int64()).cast(pa.float64()), float(SECONDS_PER_DAY * per_day[kind.unit]))
