"""The training data's profile: ranges, null rates and category domains that validation checks a partition against."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.core.config import PipelineConfig


def data_profile(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    """Return what validation needs to know of the training data: ranges, null rates, category domains."""
    numeric = {
        c: {
            "min": float(frame[c].min()),
            "max": float(frame[c].max()),
            "null_rate": float(frame[c].isna().mean()),
        }
        for c in config.features.numeric
    }
    categorical = {
        c: {"domain": sorted(str(v) for v in frame[c].dropna().unique()), "null_rate": float(frame[c].isna().mean())}
        for c in config.features.categorical
    }
    return {"rows": len(frame), "numeric": numeric, "categorical": categorical}


def widened_profile(old: dict[str, Any], recent: dict[str, Any]) -> dict[str, Any]:
    """The training profile widened to hold recent data too (a rebaseline): ranges joined, domains united, the
    higher null rate. Columns keep the old profile's set; `rows` stays the training data's."""
    numeric = {}
    for column, was in old.get("numeric", {}).items():
        now = recent.get("numeric", {}).get(column, was)
        numeric[column] = {
            "min": _known(min, was["min"], now["min"]),
            "max": _known(max, was["max"], now["max"]),
            "null_rate": max(was["null_rate"], now["null_rate"]),
        }
    categorical = {}
    for column, was in old.get("categorical", {}).items():
        now = recent.get("categorical", {}).get(column, was)
        categorical[column] = {
            "domain": sorted(set(was["domain"]) | set(now["domain"])),
            "null_rate": max(was["null_rate"], now["null_rate"]),
        }
    return {**old, "numeric": numeric, "categorical": categorical}


def _known(pick: Any, a: float, b: float) -> float:
    """`pick` of the two values that are not NaN (a column all null in one of them has no range there)."""
    known = [v for v in (a, b) if v == v]
    return float(pick(known)) if known else a
