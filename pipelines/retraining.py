"""Retraining: pick the labelled window, train and register a candidate, bootstrap the first champion."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pipelines import registry
from pipelines.config import PipelineConfig
from pipelines.errors import TrainingDataError
from pipelines.training import fit_and_evaluate, load_labelled, training_partitions

log = logging.getLogger(__name__)


def select_training_window(config: PipelineConfig, end: str | None = None) -> list[str]:
    """Return the labelled partition dates (ISO strings) the next model trains on."""
    days = training_partitions(config, date.fromisoformat(end) if end else None)
    if len(days) < 2:
        raise TrainingDataError(
            f"found {len(days)} labelled, unquarantined partition(s) in the {config.training.window_days}-day window "
            f"under {config.data_root}: at least 2 are needed (one to train on, one to hold out)"
        )
    log.info("training window: %s .. %s (%d partitions)", days[0], days[-1], len(days))
    return [d.isoformat() for d in days]


def train_candidate(config: PipelineConfig, days: list[str], lineage: dict[str, str]) -> dict[str, Any]:
    """Train on the given days, log and register the model with lineage; return its version and metrics."""
    frame, digests = load_labelled(config, [date.fromisoformat(d) for d in days])
    trained = fit_and_evaluate(config, frame)
    ref = registry.log_candidate(config, trained, digests, lineage)
    return {
        "name": ref.name,
        "version": ref.version,
        "run_id": ref.run_id,
        "metrics": trained.metrics,
        "train_days": trained.train_days,
        "holdout_days": trained.holdout_days,
    }


def bootstrap_or_challenge(config: PipelineConfig, candidate: dict[str, Any], airflow_run_id: str = "") -> str:
    """Make the candidate `champion` when there is none yet (audited), else `challenger`; return the alias set."""
    from pipelines.promotion import record_bootstrap

    ref = registry.ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
    alias = registry.CHALLENGER if registry.alias_version(config, registry.CHAMPION) else registry.CHAMPION
    registry.set_alias(config, alias, ref)
    if alias == registry.CHAMPION:
        record_bootstrap(config, ref, airflow_run_id)
    return alias


def reason_from_trigger(param_reason: str, asset_event_extras: list[dict[str, Any]]) -> str:
    """Return why this training runs: the reasons carried by retraining Asset events, else the `reason` Param."""
    reasons = [f"{e.get('ds')}: {r}" for e in asset_event_extras for r in e.get("reasons", [])]
    return "; ".join(reasons)[:480] if reasons else param_reason
