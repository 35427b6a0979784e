"""Retraining: pick the labelled window, train and register a candidate, bootstrap the first champion."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pipelines import registry
from pipelines.config import PipelineConfig
from pipelines.errors import ChampionMissingError, TrainingDataError, TrainingNotReady
from pipelines.promotion import record_bootstrap
from pipelines.training import fit_and_evaluate, load_labelled, training_partitions

log = logging.getLogger(__name__)


def drift_onset(config: PipelineConfig) -> date | None:
    """Return the first night of the newest streak of drifted nights the history recorded against the champion.

    A night counts as drifted when its drift share exceeds retraining.drift_share_threshold; quarantined
    nights (no drift measured) neither extend nor break a streak. None when no drift was recorded.
    """
    from pipelines.history import read_history

    threshold = config.retraining.drift_share_threshold
    champion = registry.alias_version(config, registry.CHAMPION)
    if threshold is None or champion is None:
        return None
    history = read_history(config)
    if history.empty:
        return None
    rows = history[(history["model_version"] == champion.version) & history["drift_share"].notna()].sort_values("ds")
    onset = None
    for ds, share in zip(reversed(rows["ds"].tolist()), reversed(rows["drift_share"].tolist())):
        if share > threshold:
            onset = ds
        elif onset is not None:
            break
    return date.fromisoformat(onset) if onset else None


def plan_training_window(
    config: PipelineConfig, end: str | None = None, window: str | None = None, window_days: int | None = None
) -> dict[str, Any]:
    """Return the training window: its days (ISO strings), the mode used and the drift onset it started from.

    `window` (sliding | since_drift_onset) and `window_days` override training.window and
    training.window_days. Raises TrainingNotReady when a since-onset window has too few labelled days yet.
    """
    # the bootstrap path: only a brand-new deployment (no audit entry, no monitored night) may create the store
    registry.client(config, create=registry.is_new_deployment(config))
    mode = window or config.training.window
    onset = drift_onset(config) if mode == "since_drift_onset" else None
    if mode == "since_drift_onset" and onset is None:
        log.info("no drift onset recorded against the champion: using the sliding window")
        mode = "sliding"
    end_day = date.fromisoformat(end) if end else None
    days = training_partitions(config, end_day, onset, window_days)
    if onset is not None and len(days) < config.training.min_days_since_onset:
        raise TrainingNotReady(
            f"drift began on {onset}, and only {len(days)} labelled day(s) since then are usable "
            f"({', '.join(d.isoformat() for d in days) or 'none'}); training.min_days_since_onset is "
            f"{config.training.min_days_since_onset}. Not retraining yet: a later request (the next drifted night) "
            "retries, or run retrain_model by hand with window=sliding"
        )
    _check_enough(config, days)
    log.info(
        "training window (%s%s): %s .. %s (%d partitions)", mode, f" from the drift onset {onset}" if onset else "",
        days[0], days[-1], len(days),
    )
    return {"days": [d.isoformat() for d in days], "mode": mode, "onset": onset.isoformat() if onset else None}


def select_training_window(config: PipelineConfig, end: str | None = None) -> list[str]:
    """Return the labelled partition dates (ISO strings) of the configured training window."""
    return plan_training_window(config, end)["days"]


def _check_enough(config: PipelineConfig, days: list[date]) -> None:
    if len(days) < 2:
        raise TrainingDataError(
            f"found {len(days)} labelled, unquarantined partition(s) in the {config.training.window_days}-day window "
            f"under {config.data_root}: at least 2 are needed (one to train on, one to hold out)"
        )


def train_candidate(config: PipelineConfig, days: list[str], lineage: dict[str, str]) -> dict[str, Any]:
    """Train on the given days, log and register the model with lineage; return its version and metrics.

    The store must exist (`plan_training_window` creates it for a brand-new deployment only).
    """
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
    """Make the candidate `champion` when there never was one (audited), else `challenger`; return the alias set.

    A missing champion alias with a former champion on record raises ChampionMissingError (the candidate
    stays `challenger`): the gate is never skipped once a champion existed.
    """
    ref = registry.ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
    if registry.alias_version(config, registry.CHAMPION) is not None:
        registry.set_alias(config, registry.CHALLENGER, ref)
        return registry.CHALLENGER
    try:
        record_bootstrap(config, ref, airflow_run_id)
    except ChampionMissingError:
        registry.set_alias(config, registry.CHALLENGER, ref)
        raise
    return registry.CHAMPION


def reason_from_trigger(param_reason: str, asset_event_extras: list[dict[str, Any]]) -> str:
    """Return why this training runs: the reasons carried by retraining Asset events, else the `reason` Param."""
    reasons = [f"{e.get('ds')}: {r}" for e in asset_event_extras for r in e.get("reasons", [])]
    return "; ".join(reasons)[:480] if reasons else param_reason
