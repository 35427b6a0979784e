"""A second sample dataset, shaped unlike the demo: any cadence, a few hundred rows a partition, every column type.

Customer churn snapshots: a text id, a timestamp, and features of every type the pipeline reads (bool, integer,
float with nulls, text, dictionary-encoded text, date and timestamp). Partition sizes vary. From `shift_at` the
spend moves above anything seen in training and a new plan appears (the data moved; it is not broken); from
`break_at` the relationship between features and churn changes (a concept break an old model cannot follow).
The "worked example" of docs/configuration.md and the tests of #9 use it; its config is `example_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from pipelines.core.paths import INCOMING, LABELS, DataPath
from pipelines.storage.atomic import write_table_atomic
from pipelines.storage.partitions import partition_dir

NUMERIC = ["tenure_weeks", "monthly_spend", "is_premium", "signup_date", "last_login"]
CATEGORICAL = ["plan", "region", "support_tickets", "autopay"]
PLANS, REGIONS = ["basic", "plus", "pro"], ["north", "south", "east", "west", "central"]


@dataclass(frozen=True)
class Shape:
    """Where the data moves (`shift_at`) and where the concept breaks (`break_at`), as partition indexes."""

    shift_at: int | None = None
    break_at: int | None = None


def _churn_probability(tenure, spend, premium, tickets, autopay, broken: bool) -> np.ndarray:
    spend = np.nan_to_num(spend, nan=50.0)
    logit = -1.0 - 0.03 * tenure + 0.45 * tickets - 0.8 * autopay + 0.6 * premium + 0.012 * (spend - 50)
    if broken:  # after the break, loyal-looking customers leave: tenure and autopay now push towards churn
        logit = -1.0 + 0.03 * tenure - 0.45 * tickets + 0.9 * autopay - 0.6 * premium - 0.012 * (spend - 50)
    return 1.0 / (1.0 + np.exp(-logit))


def partition(ds: date, index: int, rows: int, seed: int, shape: Shape) -> tuple[pa.Table, pa.Table]:
    """Return one partition's features and labels (ids match) as Arrow tables with their native column types."""
    rng = np.random.default_rng([seed, index])
    shifted = shape.shift_at is not None and index >= shape.shift_at
    broken = shape.break_at is not None and index >= shape.break_at
    tenure = rng.integers(1, 120, rows)
    spend = rng.gamma(4.0, 12.0, rows) * (1.8 if shifted else 1.0) + (40.0 if shifted else 0.0)
    spend[rng.random(rows) < 0.05] = np.nan
    premium = rng.random(rows) < 0.3
    tickets = rng.poisson(1.2, rows)
    autopay = rng.random(rows) < 0.6
    plans = np.array(PLANS + (["family"] if shifted else []))
    plan = plans[rng.integers(0, len(plans), rows)]
    region = np.array(REGIONS)[rng.integers(0, len(REGIONS), rows)]
    start = datetime(ds.year, ds.month, ds.day, tzinfo=UTC)
    signup = [ds - timedelta(weeks=int(t)) for t in tenure]
    last_login = [start - timedelta(hours=float(h)) for h in rng.exponential(48.0, rows)]
    churned = (rng.random(rows) < _churn_probability(tenure, spend, premium, tickets, autopay, broken)).astype("int8")
    ids = pa.array([f"c-{seed}-{index}-{i}" for i in range(rows)])
    features = pa.table(
        {
            "customer_id": ids,
            "snapshot_ts": pa.array(
                [start + timedelta(seconds=int(s)) for s in rng.integers(0, 3600, rows)], pa.timestamp("us", tz="UTC")
            ),
            "tenure_weeks": pa.array(tenure, pa.int64()),
            "monthly_spend": pa.array(spend, pa.float64(), from_pandas=True),
            "is_premium": pa.array(premium, pa.bool_()),
            "signup_date": pa.array(signup, pa.date32()),
            "last_login": pa.array(last_login, pa.timestamp("ms", tz="UTC")),
            "plan": pa.array(plan, pa.string()),
            "region": pa.array(region, pa.string()).dictionary_encode(),
            "support_tickets": pa.array(tickets, pa.int32()),
            "autopay": pa.array(autopay, pa.bool_()),
        }
    )
    labels = pa.table({"customer_id": ids, "churned": pa.array(churned)})
    return features, labels


def generate(
    data_root: DataPath,
    dates: list[date],
    rows: int,
    seed: int = 3,
    shape: Shape = Shape(),
    labelled: int | None = None,
) -> None:
    """Write `incoming/` (and `labels/` for the first `labelled` dates, all by default) for the given partition dates.

    Sizes vary between 60% and 140% of `rows`. Same content on every call.
    """
    sizes = np.random.default_rng(seed).integers(int(rows * 0.6), int(rows * 1.4) + 1, len(dates))
    for index, (ds, size) in enumerate(zip(dates, sizes)):
        features, labels = partition(ds, index, int(size), seed, shape)
        write_table_atomic(partition_dir(data_root, INCOMING, ds) / "part-0.parquet", features)
        if labelled is None or index < labelled:
            write_table_atomic(partition_dir(data_root, LABELS, ds) / "part-0.parquet", labels)


def write_labels(
    data_root: DataPath, dates: list[date], index: int, rows: int, seed: int = 3, shape: Shape = Shape()
) -> None:
    """Land the labels of partition `index` of `dates` (as `generate` would have written them)."""
    sizes = np.random.default_rng(seed).integers(int(rows * 0.6), int(rows * 1.4) + 1, len(dates))
    _, labels = partition(dates[index], index, int(sizes[index]), seed, shape)
    write_table_atomic(partition_dir(data_root, LABELS, dates[index]) / "part-0.parquet", labels)


def example_config(data_root: str, store_dir: str, cadence: str = "weekly") -> dict:
    """Return the pipeline config (as YAML data) for this dataset: its columns and defaults sized for small partitions."""
    return {
        "data_root": data_root,
        "id_column": "customer_id",
        "target": "churned",
        "timestamp_column": "snapshot_ts",
        "cadence": cadence,
        "label_delay_partitions": 1,
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "validation": {"min_rows": 50},
        "model": {
            "registered_name": "weekly_churn",
            "decision_threshold": 0.5,
            "hyperparameters": {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 15},
        },
        "mlflow": {"store_dir": store_dir, "experiment": "weekly_churn"},
        "training": {
            "window_partitions": 12,
            "min_partitions_since_onset": 3,
            "holdout_partitions": 2,
            "min_rows": 600,
        },
        "retraining": {"drift_consecutive_nights": 2, "max_model_age_partitions": 52},
        "promotion": {"floors": {"roc_auc": 0.6}},
    }
