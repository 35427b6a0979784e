"""Rebaseline: acknowledge a lasting shift as the new normal for the champion, as an audited action.

The champion's drift reference (its outputs on a sample of the recent partitions), the thresholds calibrated on it,
and its validation profile widened to the recent data are logged as a run of this product's experiment; the audited
`rebaseline` entry names that run (`note`), and `Registry.cached_artifact` serves the three artifacts from it. The
model, its held-out rows and its card are untouched: estimates, the gate and the performance rules go on as before.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import AuditAction, AuditEntry, GateResult, ModelRef
from pipelines.core.errors import PipelineError
from pipelines.core.kinds import Kind
from pipelines.governance import audit
from pipelines.governance.registry import (
    DRIFT_THRESHOLDS_ARTIFACT,
    PROFILE_ARTIFACT,
    REFERENCE_ARTIFACT,
    Registry,
)
from pipelines.steps.drift import calibrate_thresholds, reference_rows, sample_rows
from pipelines.steps.predictions import predict
from pipelines.steps.profile import data_profile, widened_profile
from pipelines.storage.atomic import write_json_atomic
from pipelines.storage.partitions import partition_row_count
from pipelines.storage.schema import incoming_partition

log = logging.getLogger(__name__)


def rebaseline(
    config: PipelineConfig,
    models: Registry,
    ref: ModelRef,
    days: list[date],
    reason: str,
    by: str,
    run_id: str,
    gate: GateResult | None = None,
) -> AuditEntry:
    """Refresh the champion `ref`'s drift reference to the partitions `days`; return the audited entry."""
    if not days:
        raise PipelineError("a rebaseline needs at least one scored partition of the recent window: none was given")
    kind, features = config.model.kind, config.features.all
    partitions = [incoming_partition(config, d.isoformat()) for d in days]
    per_day = max(1, reference_rows(config) // len(days))
    reference = pd.concat(
        [sample_rows(p, per_day, seed=d.toordinal()) for p, d in zip(partitions, days)], ignore_index=True
    )[features]
    outputs = predict(
        models.load_model(ref),
        reference,
        kind,
        config.model.decision_threshold,
        models.model_card(ref).classes or None,
    )
    reference = reference.assign(score=outputs.score)
    if kind is Kind.MULTICLASS:
        reference = reference.assign(prediction=outputs.prediction)
    typical = int(statistics.median(partition_row_count(list(p.files)) for p in partitions))
    thresholds = calibrate_thresholds(config, reference, typical, seed=config.training.seed)
    profile: dict[str, Any] = widened_profile(models.load_profile(ref), data_profile(reference, config))
    span = f"{days[0]} .. {days[-1]} ({len(days)} partitions)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference.to_parquet(folder / REFERENCE_ARTIFACT, index=False)
        write_json_atomic(folder / DRIFT_THRESHOLDS_ARTIFACT, thresholds)
        write_json_atomic(folder / PROFILE_ARTIFACT, profile)
        baseline_run = models.log_baseline(ref, folder, f"rebaseline to {span}: {reason}"[:480])
    with audit.audit_lock(config):
        entry = audit.append(
            config,
            AuditEntry(
                action=AuditAction.REBASELINE,
                model=ref.name,
                from_version=ref.version,
                to_version=ref.version,
                reason=f"drift reference of v{ref.version} rebaselined to {span}: {reason}"[:1000],
                approved_by=by,
                airflow_run_id=run_id,
                gate=gate,
                note=baseline_run,
            ),
        )
    log.warning(
        "rebaselined v%s: drift reference, thresholds and validation profile now from %s (%s rows, run %s)",
        ref.version,
        span,
        f"{len(reference):,}",
        baseline_run,
    )
    return entry
