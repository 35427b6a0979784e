"""Drift and data-quality reports of a night (Evidently 0.7) on a bounded uniform sample of the partition."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import PipelineConfig
from pipelines.core.kinds import Kind
from pipelines.core.paths import DataPath
from pipelines.steps.reports import evidently, save_snapshot
from pipelines.storage.parquet import read_parquet
from pipelines.storage.partitions import partition_row_count
from pipelines.storage.schema import PartitionSchema, iter_batches

log = logging.getLogger(__name__)

SCORE = "score"
PREDICTION = "prediction"  # a multiclass model's predicted class: its shares are drift-tested as a category


def output_columns(config: PipelineConfig) -> list[str]:
    """The model's outputs whose drift is tested: the score (binary probability, multiclass top probability,
    regression value) and, multiclass, the predicted class."""
    return [SCORE, PREDICTION] if config.model.kind is Kind.MULTICLASS else [SCORE]


# The configured method names are Evidently's; p-value tests flag drift below the threshold, distances above.
P_VALUE_METHODS = {"ks", "chisquare"}


def sample_rows(partition: PartitionSchema, rows: int, seed: int, batch_rows: int = 65_536) -> pd.DataFrame:
    """Return a uniform Bernoulli sample of about `rows` rows, streaming the files (memory bounded by the sample)."""
    total = partition_row_count(list(partition.files))
    keep = min(1.0, rows / max(total, 1))
    rng = np.random.default_rng(seed)
    parts = []
    for batch in iter_batches(partition, batch_rows):
        mask = rng.random(batch.num_rows) < keep
        if mask.any():
            parts.append(batch.filter(mask).to_pandas())
    return pd.concat(parts, ignore_index=True) if parts else partition.schema.empty_table().to_pandas()


def column_tests(
    config: PipelineConfig, calibrated: dict[str, dict[str, Any]] | None = None
) -> dict[str, tuple[str, float]]:
    """Return the drift method and threshold of every monitored column (features and the score).

    `calibrated` (a model's `drift_thresholds.json`) replaces a column's configured threshold when its method
    is still the configured one.
    """
    drift = config.monitoring.drift
    tests: dict[str, tuple[str, float]] = dict.fromkeys(
        config.features.numeric, (drift.numeric_method, drift.numeric_threshold)
    )
    tests |= dict.fromkeys(config.features.categorical, (drift.categorical_method, drift.categorical_threshold))
    tests[SCORE] = (drift.score_method, drift.score_threshold)
    if PREDICTION in output_columns(config):
        tests[PREDICTION] = (drift.categorical_method, drift.categorical_threshold)
    tests |= {c: (t.method, t.threshold) for c, t in drift.per_column.items()}
    for column, found in (calibrated or {}).items():
        if column in tests and tests[column][0] == found.get("method"):
            tests[column] = (found["method"], float(found["threshold"]))
    return tests


def _value_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return how often each value of either sample occurs in each (aligned on the union of values)."""
    keys, codes = np.unique(np.concatenate([reference, current]), return_inverse=True)
    ref = np.bincount(codes[: len(reference)], minlength=len(keys)).astype(float)
    return ref, np.bincount(codes[len(reference) :], minlength=len(keys)).astype(float)


def _shares(
    reference: np.ndarray, current: np.ndarray, numeric: bool, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Return the two samples' shares per bin (numeric with over 20 values: Sturges bins) or per value, as Evidently bins."""
    if numeric and len(np.unique(reference)) > 20:
        edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        ref = np.histogram(reference, edges)[0] / len(reference)
        cur = np.histogram(current, edges)[0] / len(current)
    else:
        ref, cur = _value_counts(reference, current)
        ref, cur = ref / len(reference), cur / len(current)
    if fill_zeroes:
        for shares in (ref, cur):
            smallest = shares[shares > 0].min()
            shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return ref, cur


def drift_statistic(method: str, reference: np.ndarray, current: np.ndarray, numeric: bool) -> float:
    """Return a column's drift statistic as Evidently's ValueDrift computes it (nulls dropped by the caller).

    Distances (wasserstein normed by the reference's standard deviation, jensenshannon and psi on binned shares)
    flag drift above a threshold; p-values (ks, chisquare) below. `tests/pipelines/test_drift_calibration.py`
    pins these against Evidently's own numbers.
    """
    from scipy import stats
    from scipy.spatial import distance

    if method == "wasserstein":
        return float(stats.wasserstein_distance(reference, current) / max(float(np.std(reference)), 0.001))
    if method == "ks":
        return float(stats.ks_2samp(reference, current)[1])
    if method == "jensenshannon":
        ref, cur = _shares(reference, current, numeric, fill_zeroes=False)
        return float(distance.jensenshannon(ref, cur))
    if method == "psi":
        ref, cur = _shares(reference, current, numeric, fill_zeroes=True)
        return float(np.sum((ref - cur) * np.log(ref / cur)))
    if method == "chisquare":
        ref, cur = _value_counts(reference, current)
        return float(stats.chisquare(cur, ref * len(current) / len(reference))[1])
    raise ValueError(f"unknown drift method {method!r}")


def _as_configured(method: str, threshold: float) -> dict[str, Any]:
    return {"method": method, "threshold": threshold, "configured": threshold, "calibrated": False}


def calibrate_thresholds(
    config: PipelineConfig, reference: pd.DataFrame, rows_per_partition: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Measure each monitored column's drift statistic when nothing drifted, and set its alarm threshold from it.

    Draws `calibration_draws` random chunks of the reference the size of a typical partition (capped by
    monitoring.sample_rows and half the reference) and compares each with the rest of the reference, as a
    night is compared with the reference. A distance's threshold is the larger of the configured one and the
    `calibration_quantile` of those statistics; a p-value's the smaller of the configured one and the matching
    low quantile. Small partitions get thresholds above their noise; large ones keep the configured sensitivity.
    """
    drift = config.monitoring.drift
    chunk = int(min(rows_per_partition, config.monitoring.sample_rows, len(reference) // 2))
    numeric = set(config.features.numeric) | {SCORE}
    tests = column_tests(config)
    if not drift.calibrate or chunk < 10:
        return {c: _as_configured(m, t) for c, (m, t) in tests.items()}
    # the rest of the reference each chunk is compared with: all of it up to 5 chunks (at least 5,000 rows); a
    # smaller comparison set only widens the noise a little (about 10%), so the thresholds err on the quiet side
    rest_rows = min(len(reference) - chunk, max(5 * chunk, 5_000))
    rng = np.random.default_rng(seed)
    orders = [rng.choice(len(reference), chunk + rest_rows, replace=False) for _ in range(drift.calibration_draws)]
    result = {}
    for column, (method, configured) in tests.items():
        is_numeric = column in numeric
        raw = reference[column]
        if is_numeric:
            values = raw.to_numpy(dtype=float, na_value=np.nan)
            valid = np.isfinite(values)
        else:  # categories compared by identity: integer codes test exactly as their text does, much faster
            values, valid = pd.factorize(raw.astype("string"))[0], raw.notna().to_numpy()
        observed = []
        for draw, order in enumerate(orders):
            head, tail = order[:chunk], order[chunk : chunk + rest_rows]
            current, rest = values[head][valid[head]], values[tail][valid[tail]]
            if len(current) and len(rest):
                observed.append(drift_statistic(method, rest, current, is_numeric))
            # well below the configured distance after 50 draws: the quantile will not reach it, stop early
            if draw == 49 and method not in P_VALUE_METHODS and observed and max(observed) < 0.7 * configured:
                break
        if not observed:
            result[column] = _as_configured(method, configured)
            continue
        if method in P_VALUE_METHODS:
            noise = float(np.quantile(observed, 1 - drift.calibration_quantile))
            threshold = min(configured, noise)
        else:
            noise = float(np.quantile(observed, drift.calibration_quantile))
            threshold = max(configured, noise)
        result[column] = {
            "method": method,
            "threshold": threshold,
            "configured": configured,
            "calibrated": True,
            "no_drift_quantile": noise,
            "quantile": drift.calibration_quantile,
            "chunk_rows": chunk,
            "draws": len(observed),
            "no_drift_median": float(np.median(observed)),
        }
    raised = {c: round(v["threshold"], 4) for c, v in result.items() if v["threshold"] != v["configured"]}
    log.info(
        "drift thresholds calibrated on up to %d chunks of %s reference rows; stricter than configured: %s",
        drift.calibration_draws,
        f"{chunk:,}",
        raised or "none",
    )
    return result


@dataclass
class DriftSummary:
    """Per-night drift verdicts: the share of drifted feature columns and each column's statistic."""

    share: float
    drifted_columns: list[str]
    score_drifted: bool
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_rows: int = 0
    reference_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _definition(config: PipelineConfig) -> Any:
    classes = [c for c in output_columns(config) if c != SCORE]
    return evidently().DataDefinition(
        numerical_columns=[*config.features.numeric, SCORE],
        categorical_columns=[*config.features.categorical, *classes],
    )


def _parse_drift(snapshot: Any, tests: dict[str, tuple[str, float]], features: list[str]) -> tuple[dict, list[str]]:
    values, drifted = {}, []
    data = snapshot.dict()
    for metric in data["metrics"]:
        cfg = metric.get("config", {})
        if cfg.get("type") == "evidently:metric_v2:ValueDrift":
            values[cfg["column"]] = float(metric["value"])
    verdicts = {}
    for test in data.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            verdicts[params["column"]] = test["status"] == "FAIL"
    columns = {}
    for column, (method, threshold) in tests.items():
        if column not in values:
            continue
        columns[column] = {
            "method": method,
            "threshold": threshold,
            "statistic": values[column],
            "kind": "p_value" if method in P_VALUE_METHODS else "distance",
            "drifted": verdicts.get(column, False),
        }
        if columns[column]["drifted"] and column in features:
            drifted.append(column)
    return columns, drifted


OTHER = "(other)"


def group_rare_categories(current: pd.Series, reference: pd.Series, keep: int) -> tuple[pd.Series, pd.Series]:
    """Both samples with every category outside the `keep` most frequent ones (by the larger of its shares in the
    night and the reference) replaced by OTHER; nulls stay null. Columns with few categories are returned as they
    are."""
    shares = pd.concat([current.value_counts(normalize=True), reference.value_counts(normalize=True)], axis=1).max(
        axis=1
    )
    if len(shares) <= keep:
        return current, reference
    kept = set(shares.sort_values(ascending=False, kind="stable").index[: keep - 1])

    def grouped(values: pd.Series) -> pd.Series:
        return values.where(values.isin(kept) | values.isna(), OTHER)

    return grouped(current), grouped(reference)


def _datasets(config: PipelineConfig, current: pd.DataFrame, reference: pd.DataFrame) -> tuple[Any, Any]:
    Dataset = evidently().Dataset
    columns = [*config.features.all, *output_columns(config)]
    current, reference = current[columns].copy(), reference[columns].copy()
    for column in config.features.categorical:
        current[column], reference[column] = group_rare_categories(
            current[column].astype(object), reference[column].astype(object), config.monitoring.max_categories
        )
    definition = _definition(config)
    return (
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def drift_report(
    config: PipelineConfig,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    folder: Path,
    calibrated: dict[str, dict[str, Any]] | None = None,
) -> tuple[DriftSummary, dict[str, str]]:
    """Write the drift report (features and score vs the champion's reference, one test per column).

    Thresholds are the model's calibrated ones (`calibrated`, see `calibrate_thresholds`) where it has them, else
    the configured ones; the report shows each column's threshold. Returns the verdicts and the report paths.
    """
    Report, ValueDrift = evidently().Report, evidently("metrics").ValueDrift
    tests = column_tests(config, calibrated)
    cur, ref = _datasets(config, current, reference)
    snapshot = Report(
        [ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in tests.items()],
        include_tests=True,
    ).run(current_data=cur, reference_data=ref)
    folder.mkdir(parents=True, exist_ok=True)
    paths = save_snapshot(snapshot, folder, "drift")
    stats, drifted = _parse_drift(snapshot, tests, config.features.all)
    result = DriftSummary(
        share=len(drifted) / len(config.features.all),
        drifted_columns=sorted(drifted),
        score_drifted=any(stats.get(c, {}).get("drifted", False) for c in output_columns(config)),
        columns=stats,
        sample_rows=len(current),
        reference_rows=len(reference),
    )
    log.info(
        "drift share %.2f, drifted columns %s, score drifted %s",
        result.share,
        result.drifted_columns,
        result.score_drifted,
    )
    return result, paths


def summary_report(
    config: PipelineConfig, current: pd.DataFrame, reference: pd.DataFrame, folder: Path
) -> dict[str, str]:
    """Write Evidently's data-summary (quality) report of the night beside the reference; return its paths."""
    Report, DataSummaryPreset = evidently().Report, evidently("presets").DataSummaryPreset
    cur, ref = _datasets(config, current, reference)
    snapshot = Report([DataSummaryPreset()]).run(current_data=cur, reference_data=ref)
    folder.mkdir(parents=True, exist_ok=True)
    return save_snapshot(snapshot, folder, "data_summary")


def current_sample(config: PipelineConfig, ds: str, incoming: PartitionSchema, predictions: DataPath) -> pd.DataFrame:
    """Return a uniform sample of the night's features joined to their scores (seeded by the date)."""
    seed = int(ds.replace("-", ""))
    sample = sample_rows(incoming, config.monitoring.sample_rows, seed)
    outputs = read_parquet(predictions, columns=["id", *output_columns(config)])
    scores = outputs.to_pandas().rename(columns={"id": config.id_column})
    return sample.merge(scores, on=config.id_column, how="inner")
