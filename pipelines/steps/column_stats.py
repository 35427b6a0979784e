"""Column statistics at any width: drift distances in one vectorised pass, their no-drift noise, and a false discovery
rate across columns.

A wide table is judged by many tests at once: at 1,000 columns a 0.5% per-column false-alarm rate flags five columns on
every quiet night. Each column's statistic is therefore turned into a noise p-value (how often a night without drift
gives a statistic this far out, from the null distribution measured when the model was registered) and the columns
are flagged under Benjamini-Hochberg control of the false discovery rate.

Memory is bounded by blocks of BLOCK_COLUMNS columns: a pass holds the sample's and the reference's rows of one block.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

BLOCK_COLUMNS = 32
HISTOGRAM_BINS = 20  # the per-column page's bins between the reference's 0.5% and 99.5% quantiles
TOP_CATEGORIES = 15  # the per-column page's categories (the rest counted as one)


def blocks(columns: Sequence[str], size: int = BLOCK_COLUMNS) -> Iterator[list[str]]:
    """The columns in blocks of `size`."""
    for start in range(0, len(columns), size):
        yield list(columns[start : start + size])


def finite_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as one float matrix (rows x columns) with nulls and infinities as NaN, as the tests leave them out."""
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        out[:, j] = frame[column].to_numpy(dtype=float, na_value=np.nan)
    out[~np.isfinite(out)] = np.nan
    return out


def _reference_std(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column without values: its distance is NaN anyway
        return np.nanstd(values, axis=0)


def wasserstein_columns(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Each column's Wasserstein-1 distance between the two samples, normed by the reference's standard deviation
    (at least 0.001), nulls left out: Evidently's `wasserstein` statistic (`drift.drift_statistic`) for every column
    at once. NaN where a side has no value."""
    n = len(reference)
    both = np.concatenate([reference, current])
    order = np.argsort(both, axis=0, kind="stable")  # NaN sorts last
    values = np.take_along_axis(both, order, axis=0)
    del both
    valid = ~np.isnan(values)
    from_current = order >= n
    del order
    cur, ref = from_current & valid, ~from_current & valid
    n_cur, n_ref = cur.sum(axis=0), ref.sum(axis=0)
    # the two empirical CDFs at each sorted value; between two values they are constant, so the integral of their
    # gap is the sum of gap x step (ties give steps of 0, so their order among themselves does not matter)
    gap = np.abs(
        np.cumsum(ref, axis=0, dtype=np.int64)[:-1] / np.maximum(n_ref, 1)
        - np.cumsum(cur, axis=0, dtype=np.int64)[:-1] / np.maximum(n_cur, 1)
    )
    steps = np.diff(values, axis=0)
    steps[np.isnan(steps)] = 0.0
    distance = (gap * steps).sum(axis=0)
    out = distance / np.maximum(_reference_std(reference), 0.001)
    out[(n_cur == 0) | (n_ref == 0)] = np.nan
    return out


def wasserstein_null_draws(values: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The normed Wasserstein distance of every column between the two row sets of each split (draws x columns).

    The reference is sorted once per column: a draw only marks which of its rows are the chunk and which the rest, so
    its cost is one pass over the rows instead of a sort. NaN where a side of a draw has no value.
    """
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    valid = ~np.isnan(ordered)
    steps = np.diff(ordered, axis=0)
    steps[np.isnan(steps)] = 0.0
    del ordered
    out = np.full((len(splits), values.shape[1]), np.nan)
    code = np.zeros(len(values), dtype=np.int8)
    for draw, (head, tail) in enumerate(splits):
        code[:] = 0
        code[head], code[tail] = 1, 2
        member = code[order]
        in_head, in_tail = (member == 1) & valid, (member == 2) & valid
        n_head, n_tail = in_head.sum(axis=0), in_tail.sum(axis=0)
        gap = np.abs(
            np.cumsum(in_tail, axis=0, dtype=np.int32)[:-1] / np.maximum(n_tail, 1)
            - np.cumsum(in_head, axis=0, dtype=np.int32)[:-1] / np.maximum(n_head, 1)
        )
        found = (gap * steps).sum(axis=0) / np.maximum(_reference_std(values[tail]), 0.001)
        found[(n_head == 0) | (n_tail == 0)] = np.nan
        out[draw] = found
    return out


# A distance's no-drift distribution is summarised by a gamma law fitted (by its moments) to the statistic raised to
# a power: the squared distance for Wasserstein and Jensen-Shannon (they grow like the square root of a chi-square),
# PSI itself (a chi-square-like sum). Its tail gives each night's noise p-value far beyond the measured draws.
NULL_POWER = {"wasserstein": 2.0, "jensenshannon": 2.0, "psi": 1.0}


def fit_null(method: str, observed: Sequence[float]) -> dict[str, float] | None:
    """The gamma law of a distance's no-drift draws (None for p-value tests, or too few or constant draws)."""
    power = NULL_POWER.get(method)
    values = np.asarray(observed, dtype=float)
    values = values[np.isfinite(values)]
    if power is None or len(values) < 20:
        return None
    powered = values**power
    mean, var = float(powered.mean()), float(powered.var(ddof=1))
    if mean <= 0 or var <= 0:
        return None
    return {"power": power, "shape": mean**2 / var, "scale": var / mean}


def noise_p_value(kind: str, statistic: float, null: dict[str, float] | None) -> float | None:
    """How likely a night without drift gives this statistic or one further out.

    A p-value test's statistic is its own p-value; a distance needs its fitted no-drift law (None without one: the
    column is then judged by its threshold alone).
    """
    if not np.isfinite(statistic):
        return None
    if kind == "p_value":
        return float(statistic)
    if not null:
        return None
    from scipy.stats import gamma

    return float(gamma.sf(statistic ** null["power"], null["shape"], scale=null["scale"]))


def benjamini_hochberg(p_values: dict[str, float], level: float) -> dict[str, float]:
    """Each column's q-value (Benjamini-Hochberg adjusted p-value): flag the columns whose q is at most `level` and
    the expected share of false discoveries among them is at most `level`."""
    if not p_values:
        return {}
    names = sorted(p_values, key=lambda name: (p_values[name], name))
    ranked = np.array([p_values[name] for name in names], dtype=float) * len(names) / np.arange(1, len(names) + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return {name: float(q) for name, q in zip(names, adjusted, strict=True)}


def _rounded(values: np.ndarray | list[float]) -> list[float | None]:
    return [None if not np.isfinite(v) else float(f"{v:.5g}") for v in np.asarray(values, dtype=float)]


def numeric_profiles(reference: np.ndarray, current: np.ndarray, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What a column's page shows, per numeric column of a block: both samples' shares per bin (HISTOGRAM_BINS bins
    between the reference's 0.5% and 99.5% quantiles, and one below and one above), null shares and moments."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns without values give NaN, shown as "-"
        low, high = np.nanquantile(reference, [0.005, 0.995], axis=0)
        moments = {
            side: {
                "null_share": np.isnan(values).mean(axis=0) if len(values) else np.full(len(columns), np.nan),
                "mean": np.nanmean(values, axis=0),
                "std": np.nanstd(values, axis=0),
                "min": np.nanmin(values, axis=0) if len(values) else np.full(len(columns), np.nan),
                "max": np.nanmax(values, axis=0) if len(values) else np.full(len(columns), np.nan),
            }
            for side, values in (("reference", reference), ("current", current))
        }
    out = {}
    for j, column in enumerate(columns):
        edges = (
            np.linspace(low[j], high[j], HISTOGRAM_BINS + 1)
            if np.isfinite(low[j]) and np.isfinite(high[j]) and high[j] > low[j]
            else None
        )
        shares = {}
        for side, values in (("reference", reference[:, j]), ("current", current[:, j])):
            finite = values[~np.isnan(values)]
            total = max(len(values), 1)
            if edges is None:
                counts = np.array([len(finite)])
            else:
                inner = np.histogram(finite, edges)[0]
                inner[-1] -= int(np.sum(finite == edges[-1]))  # the last edge counted as above, as the first below
                counts = np.concatenate([[np.sum(finite < edges[0])], inner, [np.sum(finite >= edges[-1])]]).astype(
                    float
                )
            shares[side] = _rounded(counts / total)
        out[column] = {
            "edges": _rounded(edges) if edges is not None else [],
            "shares": shares,
            "moments": {
                side: {name: _rounded([m[j]])[0] for name, m in stats.items()} for side, stats in moments.items()
            },
        }
    return out


def categorical_profile(reference: pd.Series, current: pd.Series) -> dict[str, Any]:
    """What a categorical column's page shows: the TOP_CATEGORIES categories' shares in both samples (by the larger
    share), the rest as one, null shares and counts of distinct values."""
    ref_counts, cur_counts = reference.value_counts(), current.value_counts()
    ref_share, cur_share = ref_counts / max(len(reference), 1), cur_counts / max(len(current), 1)
    larger = pd.concat([ref_share, cur_share], axis=1).fillna(0).max(axis=1)
    top = list(larger.sort_values(ascending=False, kind="stable").index[:TOP_CATEGORIES])
    return {
        "categories": [str(c) for c in top],
        "shares": {
            "reference": _rounded(
                [ref_share.get(c, 0.0) for c in top]
                + [1 - ref_share.reindex(top).fillna(0).sum() - reference.isna().mean() if len(reference) else 0.0]
            ),
            "current": _rounded(
                [cur_share.get(c, 0.0) for c in top]
                + [1 - cur_share.reindex(top).fillna(0).sum() - current.isna().mean() if len(current) else 0.0]
            ),
        },
        "moments": {
            side: {
                "null_share": _rounded([values.isna().mean() if len(values) else np.nan])[0],
                "distinct": int(values.nunique()),
            }
            for side, values in (("reference", reference), ("current", current))
        },
    }
