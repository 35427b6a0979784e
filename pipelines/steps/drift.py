"""Drift and data-quality reports of a night (Evidently 0.7) on a bounded uniform sample of the partition."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.config import PipelineConfig
from pipelines.core.kinds import Kind
from pipelines.core.paths import DataPath
from pipelines.core.threads import return_freed_memory
from pipelines.steps.column_stats import (
    benjamini_hochberg,
    blocks,
    categorical_profile,
    finite_matrix,
    fit_null,
    noise_p_value,
    numeric_profiles,
    wasserstein_columns,
    wasserstein_null_draws,
)
from pipelines.steps.reports import evidently, save_snapshot
from pipelines.storage.atomic import write_atomic
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


SAMPLE_COLUMN_BLOCK = 128  # columns read at once while sampling: a reader holds buffers for each column it reads


def sample_rows(partition: PartitionSchema, rows: int, seed: int, batch_rows: int = 65_536) -> pd.DataFrame:
    """Return a uniform Bernoulli sample of about `rows` rows, streaming the files (memory bounded by the sample).

    The rows are drawn once for the partition; a wide partition is then read SAMPLE_COLUMN_BLOCK columns at a time
    (each pass keeps the same rows), so the reader's buffers stay those of a narrow table.
    """
    total = partition_row_count(list(partition.files))
    keep = min(1.0, rows / max(total, 1))
    chosen = np.random.default_rng(seed).random(total) < keep
    names = partition.schema.names
    columns: dict[str, pa.ChunkedArray] = {}
    for start in range(0, len(names), SAMPLE_COLUMN_BLOCK):
        offset, parts = 0, []
        block = partition.project(names[start : start + SAMPLE_COLUMN_BLOCK])
        for batch in iter_batches(block, batch_rows):
            mask = chosen[offset : offset + batch.num_rows]
            offset += batch.num_rows
            if len(mask) < batch.num_rows:  # more rows than the footers said: the extra ones are not drawn
                mask = np.concatenate([mask, np.zeros(batch.num_rows - len(mask), dtype=bool)])
            if mask.any():
                parts.append(batch.filter(mask))
        table = pa.Table.from_batches(parts, schema=block.schema) if parts else block.schema.empty_table()
        columns |= {name: table.column(name) for name in table.column_names}
        del parts, table
        return_freed_memory()  # the reader's freed buffers (a wide partition's are many)
    # one conversion at the end: many small frames of a wide table fragment the heap (memory never returned)
    return pa.table([columns[n] for n in names], schema=partition.schema).to_pandas()


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


def monitored_rows(config: PipelineConfig) -> int:
    """The rows a night's sample (and a model's reference) holds: monitoring.sample_rows, fewer for a wide table so
    that rows x monitored columns stay within monitoring.sample_cells (never below 1,000 rows)."""
    width = len(config.features.all) + len(output_columns(config))
    return max(1_000, min(config.monitoring.sample_rows, config.monitoring.sample_cells // max(width, 1)))


def reference_rows(config: PipelineConfig) -> int:
    """The rows of a model's stored reference sample (and held-out rows): training.reference_sample_rows, fewer for a
    wide table (see `monitored_rows`)."""
    return min(config.training.reference_sample_rows, monitored_rows(config))


def _null_draws(
    reference: pd.DataFrame,
    tests: dict[str, tuple[str, float]],
    numeric: set[str],
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> dict[str, list[float]]:
    """Each column's statistic between the chunk and the rest of each split; a distance well below its configured
    threshold after 50 draws stops there (its quantile cannot reach the threshold). Wasserstein columns are measured
    together, a block of columns at a time (`column_stats.wasserstein_null_draws`); the others one by one."""
    observed: dict[str, list[float]] = {}
    vectorised = [c for c, (m, _) in tests.items() if m == "wasserstein" and c in numeric]
    first, rest = splits[:50], splits[50:]
    for block in blocks(vectorised):
        values = finite_matrix(reference, block)
        found = wasserstein_null_draws(values, first)
        limits = np.array([tests[c][1] for c in block])
        peak = np.nan_to_num(found, nan=-np.inf).max(axis=0)
        peak[peak == -np.inf] = np.inf  # no value in any draw yet: keep drawing
        more = np.flatnonzero(~(peak < 0.7 * limits)) if rest else np.array([], dtype=int)
        extra = wasserstein_null_draws(values[:, more], rest) if len(more) else np.empty((0, 0))
        for j, column in enumerate(block):
            column_draws = found[:, j]
            if j in more:
                column_draws = np.concatenate([column_draws, extra[:, int(np.flatnonzero(more == j)[0])]])
            observed[column] = [float(v) for v in column_draws if np.isfinite(v)]
    for column, (method, configured) in tests.items():
        if column in observed:
            continue
        is_numeric = column in numeric
        raw = reference[column]
        if is_numeric:
            values = raw.to_numpy(dtype=float, na_value=np.nan)
            valid = np.isfinite(values)
        else:  # categories compared by identity: integer codes test exactly as their text does, much faster
            values, valid = pd.factorize(raw.astype("string"))[0], raw.notna().to_numpy()
        found_here: list[float] = []
        for draw, (head, tail) in enumerate(splits):
            current, rest_values = values[head][valid[head]], values[tail][valid[tail]]
            if len(current) and len(rest_values):
                found_here.append(drift_statistic(method, rest_values, current, is_numeric))
            if draw == 49 and method not in P_VALUE_METHODS and found_here and max(found_here) < 0.7 * configured:
                break
        observed[column] = found_here
    return observed


def calibrate_thresholds(
    config: PipelineConfig, reference: pd.DataFrame, rows_per_partition: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Measure each monitored column's drift statistic when nothing drifted, and set its alarm threshold from it.

    Draws `calibration_draws` random chunks of the reference the size of a typical partition (capped by the
    monitored sample's rows and half the reference) and compares each with the rest of the reference, as a
    night is compared with the reference. A distance's threshold is the larger of the configured one and the
    `calibration_quantile` of those statistics; a p-value's the smaller of the configured one and the matching
    low quantile. Small partitions get thresholds above their noise; large ones keep the configured sensitivity.
    A distance's draws are also summarised as a fitted law (`null`, see `column_stats.fit_null`): each night's
    noise p-value, which the false discovery control across columns needs, comes from it.
    """
    drift = config.monitoring.drift
    chunk = int(min(rows_per_partition, monitored_rows(config), len(reference) // 2))
    numeric = set(config.features.numeric) | {SCORE}
    tests = column_tests(config)
    if not drift.calibrate or chunk < 10:
        return {c: _as_configured(m, t) for c, (m, t) in tests.items()}
    # the rest of the reference each chunk is compared with: all of it up to 5 chunks (at least 5,000 rows); a
    # smaller comparison set only widens the noise a little (about 10%), so the thresholds err on the quiet side
    rest_rows = min(len(reference) - chunk, max(5 * chunk, 5_000))
    rng = np.random.default_rng(seed)
    orders = [rng.choice(len(reference), chunk + rest_rows, replace=False) for _ in range(drift.calibration_draws)]
    splits = [(order[:chunk], order[chunk : chunk + rest_rows]) for order in orders]
    draws = _null_draws(reference, tests, numeric, splits)
    result = {}
    for column, (method, configured) in tests.items():
        observed = draws[column]
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
            "null": fit_null(method, observed),
        }
    raised = {c: round(v["threshold"], 4) for c, v in result.items() if v["threshold"] != v["configured"]}
    shown = dict(list(raised.items())[:20])
    log.info(
        "drift thresholds calibrated on up to %d chunks of %s reference rows for %d columns; stricter than "
        "configured: %s%s",
        drift.calibration_draws,
        f"{chunk:,}",
        len(result),
        shown or "none",
        f" and {len(raised) - len(shown)} more" if len(raised) > len(shown) else "",
    )
    return result


@dataclass
class DriftSummary:
    """Per-night drift verdicts: the share of drifted feature columns and each column's statistic.

    `columns` holds every tested column (its statistic, threshold, noise p-value and q-value); `reported` the ones
    Evidently rendered."""

    share: float
    drifted_columns: list[str]
    score_drifted: bool
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_rows: int = 0
    reference_rows: int = 0
    fdr: float = 0.0
    reported: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ranked(self) -> list[str]:
        """The columns most worth a look first: drifted ones, then by noise p-value, then by statistic / threshold."""
        return rank_columns(self.columns)


def _definition(config: PipelineConfig, columns: list[str]) -> Any:
    """Evidently's column roles: the id and timestamp columns named as such (the report says which they are), the
    rest numerical or categorical."""
    numeric = set(config.features.numeric) | {SCORE}
    roles = {"id_column": config.id_column, "timestamp": config.timestamp_column}
    named = {role: column for role, column in roles.items() if column and column in columns}
    data = [c for c in columns if c not in named.values()]
    return evidently().DataDefinition(
        numerical_columns=[c for c in data if c in numeric],
        categorical_columns=[c for c in data if c not in numeric],
        **named,
    )


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


def _datasets(
    config: PipelineConfig, current: pd.DataFrame, reference: pd.DataFrame, columns: list[str]
) -> tuple[Any, Any]:
    Dataset = evidently().Dataset
    current, reference = current[columns].copy(), reference[columns].copy()
    for column in columns:
        if column in config.features.categorical:
            current[column], reference[column] = group_rare_categories(
                current[column].astype(object), reference[column].astype(object), config.monitoring.max_categories
            )
    definition = _definition(config, columns)
    return (
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def _text_values(values: pd.Series) -> np.ndarray:
    return values.dropna().astype(str).to_numpy()


def column_statistics(
    config: PipelineConfig,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    calibrated: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every monitored column's drift statistic (as Evidently computes it), its noise p-value, and what its page
    shows (`column_stats.numeric_profiles` / `categorical_profile`), a block of columns at a time."""
    tests = column_tests(config, calibrated)
    numeric = [c for c in tests if c in set(config.features.numeric) | {SCORE}]
    statistics: dict[str, float] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for block in blocks(numeric):
        ref, cur = finite_matrix(reference, block), finite_matrix(current, block)
        profiles |= numeric_profiles(ref, cur, block)
        wasserstein = [j for j, c in enumerate(block) if tests[c][0] == "wasserstein"]
        if wasserstein:
            distances = wasserstein_columns(ref[:, wasserstein], cur[:, wasserstein])
            statistics |= {block[j]: float(v) for j, v in zip(wasserstein, distances, strict=True)}
        for j, column in enumerate(block):
            if column not in statistics:
                a, b = ref[:, j], cur[:, j]
                a, b = a[~np.isnan(a)], b[~np.isnan(b)]
                statistics[column] = (
                    drift_statistic(tests[column][0], a, b, True) if len(a) and len(b) else float("nan")
                )
    for column in (c for c in tests if c not in statistics):
        profiles[column] = categorical_profile(reference[column].astype(object), current[column].astype(object))
        cur_values, ref_values = group_rare_categories(
            current[column].astype(object), reference[column].astype(object), config.monitoring.max_categories
        )
        a, b = _text_values(ref_values), _text_values(cur_values)
        statistics[column] = drift_statistic(tests[column][0], a, b, False) if len(a) and len(b) else float("nan")
    columns = {}
    for column, (method, threshold) in tests.items():
        found = (calibrated or {}).get(column, {})
        kind = "p_value" if method in P_VALUE_METHODS else "distance"
        null = found.get("null") if found.get("method") == method else None
        statistic = statistics[column]
        columns[column] = {
            "method": method,
            "threshold": threshold,
            "statistic": statistic,
            "kind": kind,
            "p_noise": noise_p_value(kind, statistic, null),
            "output": column in output_columns(config),
        }
    return columns, profiles


def beyond_threshold(found: dict[str, Any]) -> bool:
    """Whether a column's statistic is past its threshold: a p-value below it, a distance at or above it."""
    statistic = found["statistic"]
    if not np.isfinite(statistic):
        return False
    return statistic < found["threshold"] if found["kind"] == "p_value" else statistic >= found["threshold"]


def judge_columns(columns: dict[str, dict[str, Any]], fdr: float) -> None:
    """Set each column's verdict: past its threshold, and its noise p-value significant under Benjamini-Hochberg
    control of the false discovery rate at `fdr` across the feature columns (each model output on its own, at `fdr`).
    A column without a noise p-value (a model calibrated before it existed, or calibration off) is judged by its
    threshold alone."""
    family = {c: f["p_noise"] for c, f in columns.items() if not f["output"] and f["p_noise"] is not None}
    q_values = benjamini_hochberg(family, fdr)
    for column, found in columns.items():
        p = found["p_noise"]
        found["q_value"] = q_values.get(column, p)
        significant = p is None or found["q_value"] <= fdr
        found["past_threshold"] = beyond_threshold(found)
        found["drifted"] = found["past_threshold"] and significant


def threshold_ratio(found: dict[str, Any]) -> float | None:
    """A column's statistic against its threshold: 1 at the threshold, above 1 past it (a p-value below its
    threshold, a distance above); None without a finite statistic or a usable threshold."""
    statistic, threshold = found.get("statistic"), found.get("threshold")
    if not isinstance(statistic, int | float) or not isinstance(threshold, int | float) or not np.isfinite(statistic):
        return None
    if found.get("kind") == "p_value":
        return threshold / max(statistic, 1e-300)
    return statistic / threshold if threshold else None


def rank_columns(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Drifted columns first, then the least likely under no drift (noise p-value), then the furthest past (or
    closest to) their thresholds."""

    def key(name: str) -> tuple[bool, float, float]:
        found = columns[name]
        ratio = threshold_ratio(found)
        ratio = -np.inf if ratio is None else ratio
        p = found.get("p_noise")
        return (not found.get("drifted", False), 1.0 if p is None else p, -ratio)

    return sorted(columns, key=key)


def reported_columns(config: PipelineConfig, columns: dict[str, dict[str, Any]]) -> list[str]:
    """The columns Evidently renders: the model's outputs and the first monitoring.report_columns of the ranking."""
    outputs = output_columns(config)
    ranked = [c for c in rank_columns(columns) if c not in outputs]
    return ranked[: max(config.monitoring.report_columns - len(outputs), 1)] + outputs


def drift_report(
    config: PipelineConfig,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    folder: Path,
    calibrated: dict[str, dict[str, Any]] | None = None,
    ds: str = "",
) -> tuple[DriftSummary, dict[str, str]]:
    """Test every column, then write the night's drift overview, its statistics and Evidently's report of the top
    columns.

    Every column is tested in one vectorised pass (`column_statistics`) against its threshold (the model's
    calibrated one where it has it, else the configured one) and, across columns, the false discovery rate
    (`judge_columns`). The overview (`drift_overview.html`) ranks all columns; each column's page is rendered on
    demand from `drift_columns.json`; Evidently renders the outputs and the top `monitoring.report_columns`
    columns (`drift.html`). Returns the verdicts and the report paths.
    """
    from pipelines.steps.drift_pages import overview_page

    Report, ValueDrift = evidently().Report, evidently("metrics").ValueDrift
    fdr = config.monitoring.drift.fdr
    columns, profiles = column_statistics(config, current, reference, calibrated)
    judge_columns(columns, fdr)
    shown = reported_columns(config, columns)
    folder.mkdir(parents=True, exist_ok=True)
    cur, ref = _datasets(config, current, reference, shown)
    snapshot = Report(
        [ValueDrift(column=c, method=columns[c]["method"], threshold=columns[c]["threshold"]) for c in shown],
        include_tests=True,
    ).run(current_data=cur, reference_data=ref)
    paths = save_snapshot(snapshot, folder, "drift")
    features = set(config.features.all)
    drifted = sorted(c for c, f in columns.items() if f["drifted"] and c in features)
    result = DriftSummary(
        share=len(drifted) / len(config.features.all),
        drifted_columns=drifted,
        score_drifted=any(columns.get(c, {}).get("drifted", False) for c in output_columns(config)),
        columns=columns,
        sample_rows=len(current),
        reference_rows=len(reference),
        fdr=fdr,
        reported=shown,
    )
    stored = {
        "ds": ds,
        "fdr": fdr,
        "sample_rows": len(current),
        "reference_rows": len(reference),
        "ranked": result.ranked(),
        "columns": {c: columns[c] | {"profile": profiles.get(c)} for c in columns},
        "reported": shown,
    }
    target = folder / "drift_columns.json"
    write_atomic(target, lambda temp: temp.write_text(json.dumps(_plain(stored), allow_nan=False), "utf-8"))
    paths["drift_columns_json"] = str(target)
    page = folder / "drift_overview.html"
    write_atomic(page, lambda temp: temp.write_text(overview_page(stored), encoding="utf-8"))
    paths["drift_overview_html"] = str(page)
    log.info(
        "drift share %.2f (%d of %d feature columns at a false discovery rate of %s), drifted columns %s, "
        "score drifted %s",
        result.share,
        len(drifted),
        len(config.features.all),
        fdr,
        drifted[:20] + (["..."] if len(drifted) > 20 else []),
        result.score_drifted,
    )
    return result, paths


def _plain(value: Any) -> Any:
    """`value` as plain JSON: numpy scalars as Python ones, NaN and infinities as null (a column without values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def summary_report(
    config: PipelineConfig, current: pd.DataFrame, reference: pd.DataFrame, folder: Path, columns: list[str]
) -> dict[str, str]:
    """Write Evidently's data-summary (quality) report of `columns` (the night's reported ones) beside the reference;
    return its paths."""
    Report, DataSummaryPreset = evidently().Report, evidently("presets").DataSummaryPreset
    # the id, and the timestamp when it is a datetime in both: Evidently names their roles in the report (the
    # reference keeps no ids: its rows are numbered)
    roles = [config.id_column] if config.id_column in current else []
    if roles and config.id_column not in reference:
        reference = reference.assign(**{config.id_column: [f"reference-{i}" for i in range(len(reference))]})
    stamp = config.timestamp_column
    both = (current, reference)
    if stamp and all(stamp in f and pd.api.types.is_datetime64_any_dtype(f[stamp]) for f in both):
        roles.append(stamp)
    cur, ref = _datasets(config, current, reference, [*columns, *[c for c in roles if c not in columns]])
    snapshot = Report([DataSummaryPreset()]).run(current_data=cur, reference_data=ref)
    folder.mkdir(parents=True, exist_ok=True)
    return save_snapshot(snapshot, folder, "data_summary")


def current_sample(config: PipelineConfig, ds: str, incoming: PartitionSchema, predictions: DataPath) -> pd.DataFrame:
    """Return a uniform sample of the night's features joined to their scores (seeded by the date)."""
    seed = int(ds.replace("-", ""))
    sample = sample_rows(incoming, monitored_rows(config), seed)
    outputs = read_parquet(predictions, columns=["id", *output_columns(config)])
    scores = outputs.to_pandas().rename(columns={"id": config.id_column})
    return sample.merge(scores, on=config.id_column, how="inner")
