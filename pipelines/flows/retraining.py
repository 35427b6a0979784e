"""Retraining: pick the labelled window, train and register a candidate, bootstrap the first champion."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from pipelines.core.cadence import shift
from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import (
    Alias,
    AuditEntry,
    Candidate,
    Episode,
    EpisodeState,
    GateResult,
    Lesson,
    RetrainRequest,
    Rule,
    TrainingWindow,
)
from pipelines.core.errors import ChampionMissingError, TrainingNotReady
from pipelines.core.paths import LABELS
from pipelines.core.threads import thread_cap
from pipelines.governance.baseline import rebaseline
from pipelines.governance.gate import floor_failures
from pipelines.governance.promotion import record_bootstrap
from pipelines.governance.registry import Registry, is_new_deployment
from pipelines.steps.decision import drifted
from pipelines.steps.episodes import ACTS_AT_ONCE, Readiness, after_rebaseline, back_to_waiting, backoff
from pipelines.steps.training import fit_and_evaluate, load_labelled, training_partitions
from pipelines.storage.episodes import change_open, open_episode
from pipelines.storage.history import read_history
from pipelines.storage.partitions import parse_ds, partition_files, partition_row_count
from pipelines.storage.schema import check_feature_kinds

log = logging.getLogger(__name__)


def drift_onset(config: PipelineConfig, models: Registry) -> date | None:
    """Return the first night of the newest streak of drifted nights the history recorded against the champion.

    A streak counts only when it lasted retraining.drift_consecutive_nights nights in a row (one noisy night is not
    an onset). A night is drifted as the decision counts it (see `decision.drifted`); quarantined nights (no drift
    measured) neither extend nor break a streak. None when no such streak was recorded.
    """
    champion = models.alias_version(Alias.CHAMPION)
    if config.retraining.drift_share_threshold is None or champion is None:
        return None
    history = read_history(config)
    if history.empty:
        return None
    rows = history[(history["model_version"] == champion.version) & history["drift_share"].notna()].sort_values("ds")
    flags = drifted(config, rows)
    streak: list[str] = []
    for ds, flag in zip(reversed(rows["ds"].tolist()), reversed(flags.tolist())):
        if flag:
            streak.append(ds)
            continue
        if len(streak) >= config.retraining.drift_consecutive_nights:
            break
        streak = []
    return date.fromisoformat(streak[-1]) if len(streak) >= config.retraining.drift_consecutive_nights else None


def requirements(config: PipelineConfig) -> str:
    """Return what a training run needs, in words (for the task log and the not-ready messages)."""
    t = config.training
    return (
        f"at least {t.holdout_partitions + 1} labelled, unquarantined partitions (training.holdout_partitions "
        f"{t.holdout_partitions} held out, at least one to train on), at least {t.min_rows:,} labelled training rows "
        f"(training.min_rows) holding both classes, and with window since_drift_onset "
        f"{t.min_partitions_since_onset} labelled partitions since the onset (training.min_partitions_since_onset); "
        f"labels of a partition arrive {config.label_delay_partitions} partition(s) later (label_delay_partitions)"
    )


def _labelled_rows(config: PipelineConfig, days: list[date]) -> int:
    return sum(partition_row_count(partition_files(config.data_root, LABELS, d)) for d in days)


def select_training_window(
    config: PipelineConfig,
    end: date | str | None = None,
    window: str | None = None,
    window_partitions: int | None = None,
    airflow_run_id: str = "",
) -> TrainingWindow:
    """Return the training window: its partition dates, the mode used and the drift onset it started from.

    `window` (sliding | since_drift_onset) and `window_partitions` override training.window and
    training.window_partitions. Raises TrainingNotReady when there is too little labelled data yet (too few
    partitions since the onset or at all, too few labelled rows): the run waits, and the open episode waits again
    for a later night to request once the data can be there.
    """
    try:
        return _training_window(config, end, window, window_partitions)
    except TrainingNotReady as exc:
        why, after = str(exc), exc.ready_after
        change_open(config, lambda episode: back_to_waiting(episode, why, after), airflow_run_id)
        raise


def training_readiness(config: PipelineConfig, rules: frozenset[Rule]) -> Readiness:
    """Whether a retraining run could train now (a dry run of its window selection), and when it could if not.

    A drift onset waits for its labelled partitions, whichever rules fired: a model trained across the onset would
    mix the two worlds, and the wait is known. Rules that act at once (performance, age, force) fall back to the
    sliding window only when the configured window fails for another reason.
    """
    usable = training_partitions(config)
    newest = usable[-1].isoformat() if usable else None
    try:
        _training_window(config)
        return Readiness(True, labelled_until=newest)
    except TrainingNotReady as exc:
        onset = config.training.window == "since_drift_onset" and drift_onset(config, Registry.open(config)) is not None
        if rules & ACTS_AT_ONCE and not onset:
            try:
                _training_window(config, window="sliding")
                return Readiness(True, window="sliding", labelled_until=newest)
            except TrainingNotReady:
                pass
        return Readiness(False, ready_after=exc.ready_after, why=str(exc), labelled_until=newest)


def requested_window(requests: list[RetrainRequest]) -> str | None:
    """The training window the retraining requests ask for (the newest that names a known one), else None."""
    asked = [r.window for r in requests if r.window in ("sliding", "since_drift_onset")]
    return asked[-1] if asked else None


def _training_window(
    config: PipelineConfig,
    end: date | str | None = None,
    window: str | None = None,
    window_partitions: int | None = None,
) -> TrainingWindow:
    check_feature_kinds(config)
    # the bootstrap path: only a brand-new deployment (no audit entry, no monitored night) may create the store
    models = Registry.open(config, create=is_new_deployment(config))
    log.info("training needs %s", requirements(config))
    mode = window or config.training.window
    onset = drift_onset(config, models) if mode == "since_drift_onset" else None
    if mode == "since_drift_onset" and onset is None:
        log.info("no drift onset recorded against the champion: using the sliding window")
        mode = "sliding"
    end_day = parse_ds(end) if end else None
    days = training_partitions(config, end_day, onset, window_partitions)
    needed = config.training.min_partitions_since_onset
    if onset is not None and len(days) < needed:
        ready = shift(config, onset, needed - 1 + config.label_delay_partitions)
        raise TrainingNotReady(
            ready_after=ready.isoformat(),
            message=f"drift began on {onset}, and only {len(days)} labelled partition(s) since then are usable "
            f"({', '.join(d.isoformat() for d in days) or 'none'}); training.min_partitions_since_onset is {needed}. "
            f"Not retraining yet: with labels {config.label_delay_partitions} partition(s) late, enough should exist "
            f"after the partition of {ready}; the drift episode requests retraining again then, or run retrain_model "
            "by hand with window=sliding",
        )
    _check_enough(config, days)
    log.info(
        "training window (%s%s): %s .. %s (%d partitions)",
        mode,
        f" from the drift onset {onset}" if onset else "",
        days[0],
        days[-1],
        len(days),
    )
    return TrainingWindow(days=[d.isoformat() for d in days], mode=mode, onset=onset.isoformat() if onset else None)


def _check_enough(config: PipelineConfig, days: list[date]) -> None:
    if len(days) < 2:
        raise TrainingNotReady(
            f"found {len(days)} labelled, unquarantined partition(s) in the {config.training.window_partitions}-partition "
            f"window under {config.data_root}: at least 2 are needed (one to train on, one to hold out). Not training "
            f"yet: training needs {requirements(config)}"
        )
    held_out = min(config.training.holdout_partitions, len(days) - 1)
    rows = _labelled_rows(config, days[:-held_out])
    if rows < config.training.min_rows:
        raise TrainingNotReady(
            f"only {rows:,} labelled rows in the {len(days) - held_out} training partition(s) "
            f"({days[0]} .. {days[-held_out - 1]}); training.min_rows is {config.training.min_rows:,}. Not training yet: "
            "the episode requests again once more labels exist; lower training.min_rows or widen "
            "training.window_partitions if your partitions are small (see docs/configuration.md)"
        )


def train_candidate(config: PipelineConfig, window: TrainingWindow, lineage: dict[str, str]) -> Candidate:
    """Train on the window's days, log and register the model with its lineage (`reason`, `airflow_run_id`).

    The store must exist (`select_training_window` creates it for a brand-new deployment only).
    """
    try:
        frame, digests = load_labelled(config, [date.fromisoformat(d) for d in window.days])
        with thread_cap(config.training.threads, "training"):
            trained = fit_and_evaluate(config, frame)
    except TrainingNotReady as exc:
        # the window's files looked enough, its usable labels were not: wait for one more labelled partition
        why, after = str(exc), shift(config, date.fromisoformat(window.days[-1]), config.label_delay_partitions + 1)
        change_open(
            config, lambda episode: back_to_waiting(episode, why, after.isoformat()), lineage.get("airflow_run_id", "")
        )
        raise
    ref = Registry.open(config).log_candidate(trained, digests, {"training.window": window.describe(), **lineage})
    return Candidate(
        name=ref.name,
        version=ref.version,
        run_id=ref.run_id,
        metrics=trained.metrics,
        train_days=trained.train_days,
        holdout_days=trained.holdout_days,
    )


def bootstrap_or_challenge(config: PipelineConfig, candidate: Candidate, airflow_run_id: str = "") -> Alias:
    """Make the candidate `champion` when there never was one (audited), else `challenger`; return the alias set.

    A first model whose held-out metrics miss a promotion floor gets no alias (`REFUSED`; the gate step rejects it
    with the floor named). A missing champion alias with a former champion on record raises ChampionMissingError
    (the candidate stays `challenger`): the gate is never skipped once a champion existed.
    """
    models, ref = Registry.open(config), candidate.ref
    if models.alias_version(Alias.CHAMPION) is not None:
        models.set_alias(Alias.CHALLENGER, ref)
        return Alias.CHALLENGER
    short = floor_failures(config, candidate.metrics, first=True)
    if short and not models.former_champion():
        log.warning("v%s is not made the first champion: %s", ref.version, "; ".join(short))
        return Alias.REFUSED
    try:
        record_bootstrap(config, models, ref, airflow_run_id)
    except ChampionMissingError:
        models.set_alias(Alias.CHALLENGER, ref)
        raise
    return Alias.CHAMPION


def reason_from_trigger(param_reason: str, requests: list[RetrainRequest]) -> str:
    """Return why this training runs: the reasons carried by retraining Asset events, else the `reason` Param."""
    reasons = [line for request in requests for line in request.lines()]
    return "; ".join(reasons)[:480] if reasons else param_reason


def learn_from_rejection(
    config: PipelineConfig,
    candidate: Candidate | None,
    gate: GateResult | None,
    window: TrainingWindow | None,
    rejection: AuditEntry | None,
    refusal: AuditEntry | None,
    run_id: str,
) -> Lesson:
    """After a candidate was rejected (`rejection`: by the gate; `refusal`: by a person), update the open episode.

    - A drift-only episode whose candidate, trained on the shifted data, the gate found no better: the shift is
      harmless for this model. The champion's drift reference is rebaselined to the window (audited, with the gate's
      evidence) and the episode closes; the same shift no longer fires, new drift and the performance rules still do.
    - Otherwise (performance or age rules, or a refusal) the episode backs off until the labelled window has moved
      `retry_after_partitions`; a champion failing a performance rule gets the one "not helping" alert.
    Also removes the artifacts of candidates rejected longer ago than promotion.keep_rejected_days.
    """
    removed = _apply_retention(config)
    entry = rejection or refusal
    if entry is None or candidate is None or gate is None or gate.bootstrap or window is None:
        return Lesson(removed_artifacts=removed, summary="nothing was rejected")
    episode = open_episode(config)
    if episode is None:
        return Lesson(removed_artifacts=removed, summary="no open episode: a manual run's candidate was rejected")
    rules, today = set(episode.rules), datetime.now(UTC).date().isoformat()
    shifted = [d for d in window.days if episode.onset is None or d >= episode.onset]
    if rejection is not None and gate.comparison is not None and rules == {Rule.DRIFT} and shifted:
        models = Registry.open(config)
        champion = models.champion()
        audited = rebaseline(
            config,
            models,
            champion,
            [date.fromisoformat(d) for d in shifted],
            f"candidate v{candidate.version}, trained on the shifted data, was not better than v{champion.version} "
            f"({'; '.join(gate.reasons)[:400]}): the shift is harmless for this model",
            "gate",
            run_id,
            gate,
        )
        closed = change_open(
            config, lambda ep: after_rebaseline(ep, candidate.version, today, "gate") if ep else None, run_id
        )
        return Lesson(
            action="rebaselined",
            episode=closed,
            rebaseline=audited,
            removed_artifacts=removed,
            summary=audited.reason,
        )
    if rules == {Rule.FORCE}:
        closed = change_open(
            config,
            lambda ep: (
                ep.model_copy(
                    update={
                        "state": EpisodeState.CLOSED,
                        "closed_ds": today,
                        "candidates": [*ep.candidates, candidate.version],
                        "outcome": f"closed: the forced retraining's candidate v{candidate.version} was rejected",
                    }
                )
                if ep
                else None
            ),
            run_id,
        )
        return Lesson(
            action="closed", episode=closed, removed_artifacts=removed, summary=closed.outcome if closed else ""
        )
    said: dict[str, bool] = {}

    def wait(ep: Episode | None) -> Episode | None:
        if ep is None:
            return None
        changed, alert = backoff(config, ep, candidate.version, window.days[-1], window.days[0])
        said["alert"] = alert and rejection is not None  # a person's refusal is not evidence that retraining fails
        return changed

    waiting = change_open(config, wait, run_id)
    return Lesson(
        action="backoff",
        episode=waiting,
        not_helping=said.get("alert", False),
        removed_artifacts=removed,
        summary=waiting.outcome if waiting else "",
    )


def _apply_retention(config: PipelineConfig) -> list[str]:
    days = config.promotion.keep_rejected_days
    if days is None:
        return []
    return Registry.open(config).remove_rejected_artifacts(days, datetime.now(UTC))
