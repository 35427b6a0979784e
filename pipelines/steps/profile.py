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
