"""Deterministic credit-default sample data written as daily partitions, with optional drift."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.paths import INCOMING, LABELS, DataPath
from pipelines.storage.atomic import publish, temp_path_beside, write_atomic
from pipelines.storage.parquet import parquet_writer, read_metadata, read_parquet
from pipelines.storage.partitions import partition_dir, partition_files

log = logging.getLogger(__name__)

CHUNK_ROWS = 250_000
ID_STRIDE = 100_000_000
CATEGORIES = {
    "home_ownership": (["RENT", "OWN", "MORTGAGE", "OTHER"], [0.38, 0.20, 0.40, 0.02]),
    "loan_purpose": (
        ["debt_consolidation", "credit_card", "home_improvement", "car", "medical", "other"],
        [0.36, 0.22, 0.12, 0.12, 0.06, 0.12],
    ),
    "region": (["NORTH", "SOUTH", "EAST", "WEST", "CENTRAL"], [0.22, 0.24, 0.18, 0.20, 0.16]),
    "employment_type": (
        ["SALARIED", "SELF_EMPLOYED", "CONTRACT", "UNEMPLOYED", "RETIRED"],
        [0.62, 0.14, 0.12, 0.05, 0.07],
    ),
}
DRIFTED_PURPOSE = [0.25, 0.20, 0.08, 0.10, 0.22, 0.15]
EFFECTS = {
    "home_ownership": {"RENT": 0.30, "MORTGAGE": -0.15},
    "loan_purpose": {"medical": 0.45, "credit_card": 0.12, "car": -0.2},
    "employment_type": {"SELF_EMPLOYED": 0.2, "CONTRACT": 0.25, "UNEMPLOYED": 0.9, "RETIRED": -0.1},
}


@dataclass(frozen=True)
class DriftSpec:
    """Drift injected from `start` on: covariate shift of the inputs and/or a new target relation."""

    start: date | None = None
    covariate: bool = False
    concept: bool = False

    def active(self, day: date) -> tuple[bool, bool]:
        on = self.start is not None and day >= self.start
        return on and self.covariate, on and self.concept


def _features(rng: np.random.Generator, n: int, covariate: bool) -> pd.DataFrame:
    income_center = np.log(44_000 if covariate else 55_000)
    frame = pd.DataFrame(
        {
            "age": np.clip(rng.normal(42, 12, n), 18, 85).round(),
            "annual_income": np.exp(rng.normal(income_center, 0.5, n)).round(-2),
            "debt_to_income": rng.beta(2, 5, n) * 0.8,
            "credit_utilization": rng.beta(3, 3, n) if covariate else rng.beta(2, 3, n),
            "open_accounts": rng.poisson(6, n).astype("float64"),
            "late_payments_12m": np.zeros(n),
            "months_since_delinquency": rng.exponential(30, n).round(),
            "loan_amount": np.exp(rng.normal(np.log(12_000), 0.6, n)).round(-1),
            "employment_years": np.clip(rng.exponential(6, n), 0, 45).round(1),
            "credit_inquiries_6m": rng.poisson(2.0 if covariate else 1.2, n).astype("float64"),
        }
    )
    frame["late_payments_12m"] = rng.poisson(0.3 + 0.9 * frame["credit_utilization"]).astype("float64")
    frame.loc[frame["late_payments_12m"] == 0, "months_since_delinquency"] = np.nan
    for name, (values, probs) in CATEGORIES.items():
        p = DRIFTED_PURPOSE if covariate and name == "loan_purpose" else probs
        frame[name] = rng.choice(np.array(values, dtype=object), size=n, p=p)
    for column, rate in {
        "annual_income": 0.03,
        "debt_to_income": 0.02,
        "employment_years": 0.04,
        "region": 0.01,
    }.items():
        frame.loc[rng.random(n) < rate, column] = None
    return frame


def _default_probability(frame: pd.DataFrame, concept: bool) -> np.ndarray:
    income = np.log(frame["annual_income"].fillna(55_000) / 55_000)
    dti = frame["debt_to_income"].fillna(0.28) - 0.28
    late = frame["late_payments_12m"]
    logit = (
        -2.5
        + 1.8 * (frame["credit_utilization"] - 0.4)
        + (0.15 if concept else 0.55) * late
        + (4.5 if concept else 2.2) * dti
        - 0.6 * income
        + 0.25 * frame["credit_inquiries_6m"]
        - 0.025 * (frame["age"] - 42)
        - 0.04 * (frame["employment_years"].fillna(6) - 6)
        + 0.35 * np.log(frame["loan_amount"] / 12_000)
        + 0.2 * frame["credit_utilization"] * late
    )
    for column, effects in EFFECTS.items():
        logit = logit + frame[column].map(effects).fillna(0.0).astype("float64")
    if concept:
        logit = logit + np.where(frame["region"] == "SOUTH", 0.9, 0.0) - np.where(frame["region"] == "NORTH", 0.5, 0.0)
    return 1.0 / (1.0 + np.exp(-logit.to_numpy()))


# the label column of each model kind: default (binary), a risk tier (multiclass), the loss in currency (regression)
TARGETS = {"binary": "defaulted", "multiclass": "risk_tier", "regression": "loss_amount"}


def _target(frame: pd.DataFrame, probability: np.ndarray, rng: np.random.Generator, kind: str) -> pd.Series:
    """The label of each row for a model kind, all from the same default probability (so drift moves them all)."""
    if kind == "multiclass":
        # a noisy risk score cut into three tiers: low, medium, high
        risk = np.log(probability / (1 - probability)) + rng.logistic(0, 0.6, len(frame))
        return pd.Series(np.select([risk < -2.8, risk < -1.6], ["low", "medium"], "high"), dtype=object)
    if kind == "regression":
        exposure = frame["loan_amount"].to_numpy() * 0.05
        return pd.Series((exposure * probability * 10 + rng.normal(0, 40, len(frame))).round(2))
    return pd.Series((rng.random(len(frame)) < probability).astype("int8"))


def generate_chunk(day: date, chunk: int, rows: int, seed: int, drift: DriftSpec, kind: str = "binary") -> pd.DataFrame:
    """Return one chunk of a day's applications with their true label in column TARGETS[kind]."""
    covariate, concept = drift.active(day)
    rng = np.random.default_rng([seed, day.toordinal(), chunk])
    frame = _features(rng, rows, covariate)
    start = day.toordinal() * ID_STRIDE + chunk * CHUNK_ROWS
    frame.insert(0, "application_id", np.arange(start, start + rows, dtype="int64"))
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, rows))
    frame.insert(1, "application_ts", pd.to_datetime(midnight) + pd.to_timedelta(seconds, unit="s"))
    frame[TARGETS[kind]] = _target(frame, _default_probability(frame, concept), rng, kind).to_numpy()
    return frame


def write_day(
    data_root: DataPath,
    day: date,
    rows: int,
    seed: int,
    drift: DriftSpec,
    with_labels: bool,
    label_fraction: float = 1.0,
    with_features: bool = True,
    kind: str = "binary",
) -> None:
    """Write `incoming/ds=day` and/or `labels/ds=day` in bounded memory, atomically (same content on every call)."""
    targets = {}
    if with_features:
        targets["features"] = partition_dir(data_root, INCOMING, day) / "part-0000.parquet"
    if with_labels:
        targets["labels"] = partition_dir(data_root, LABELS, day) / "part-0000.parquet"
    temps = {what: temp_path_beside(path) for what, path in targets.items()}
    writers: dict[str, pq.ParquetWriter] = {}
    label_rng = np.random.default_rng([seed, day.toordinal(), 999_999])
    try:
        for chunk, offset in enumerate(range(0, rows, CHUNK_ROWS)):
            frame = generate_chunk(day, chunk, min(CHUNK_ROWS, rows - offset), seed, drift, kind)
            keep = label_rng.random(len(frame)) < label_fraction
            target = TARGETS[kind]
            for what in temps:
                part = frame.drop(columns=target) if what == "features" else frame.loc[keep, ["application_id", target]]
                table = pa.Table.from_pandas(part, preserve_index=False)
                if what not in writers:
                    writers[what] = parquet_writer(temps[what], table.schema)
                writers[what].write_table(table, row_group_size=131_072)
        for what in list(writers):
            writers.pop(what).close()
        for what, path in targets.items():
            publish(temps[what], path)
    finally:
        for writer in writers.values():
            writer.close()
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def generate(
    data_root: DataPath,
    start: date,
    days: int,
    rows_per_day: int,
    label_delay_days: int,
    as_of: date | None = None,
    seed: int = 7,
    drift: DriftSpec = DriftSpec(),
    label_fraction: float = 1.0,
    kind: str = "binary",
) -> list[date]:
    """Write `days` daily partitions from `start`; labels exist for days at least `label_delay_days` before `as_of`.

    `as_of` defaults to the last generated day. Returns the generated dates.
    """
    dates = [start + timedelta(days=i) for i in range(days)]
    as_of = as_of or dates[-1]
    for day in dates:
        labelled = day + timedelta(days=label_delay_days) <= as_of
        write_day(data_root, day, rows_per_day, seed, drift, labelled, label_fraction, kind=kind)
        log.info("wrote %s: %s rows%s", day, f"{rows_per_day:,}", " + labels" if labelled else "")
    return dates


def _varint(number: int) -> bytes:
    out = b""
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            return out + bytes([low])
        out += bytes([low | 0x80])


def claim_rows(data: bytes, rows: int, claimed: int) -> bytes:
    """A Parquet file's bytes with its footer's row count (FileMetaData.num_rows, Thrift compact) set to `claimed`."""
    length = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - length : -8]
    old, new = b"\x16" + _varint(rows << 1), b"\x16" + _varint(claimed << 1)  # field 3, i64, zigzag varint
    at = footer.index(old)
    footer = footer[:at] + new + footer[at + len(old) :]
    return data[: -8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1"


def break_partition(data_root: DataPath, day: date, defect: str) -> None:
    """Damage an incoming partition on purpose, for demos and tests.

    `truncated`: the Parquet file is cut in half (unreadable); `missing_column`: `annual_income` is
    dropped; `unknown_category`: a third of `loan_purpose` values are new; `lying_footer`: the footer claims
    10^15 rows (the row groups and the data are intact).
    """
    file = partition_files(data_root, INCOMING, day)[0]
    if defect == "truncated":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
        return
    if defect == "lying_footer":
        file.write_bytes(claim_rows(file.read_bytes(), read_metadata(file).num_rows, 10**15))
        return
    table = read_parquet(file)
    if defect == "missing_column":
        table = table.drop_columns(["annual_income"])
    elif defect == "unknown_category":
        frame = table.to_pandas()
        frame.loc[frame.index % 3 == 0, "loan_purpose"] = "crypto"
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        raise ValueError(f"unknown defect {defect!r}: use truncated, missing_column, unknown_category or lying_footer")

    def write(temp: DataPath) -> None:
        with parquet_writer(temp, table.schema) as writer:
            writer.write_table(table)

    write_atomic(file, write)  # the partition's other files stay
