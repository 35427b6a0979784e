"""One alarm per problem: the episode a night's retraining rules open or join, and whether the night requests.

A night whose rules fire opens an episode when none is open (its one alert). While the episode is open further
nights do not request again: the request goes out once, when a training run can train (drift waits for labelled
partitions since the onset; performance, age and force act at once), and a rerun of a night never requests twice.
A reminder goes out every `retraining.reminder_partitions` partitions without progress. After a rejected candidate
the episode either closes (a harmless drift shift is rebaselined, `flows.retraining.learn_from_rejection`) or waits
until the labelled window has moved (`backoff`). Pure: the caller reads and stores the episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pipelines.core.cadence import partitions_between, shift
from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Decision, Episode, EpisodeState, Rule

ACTS_AT_ONCE = frozenset({Rule.FORCE, Rule.PERFORMANCE, Rule.AGE})
MAX_REASONS = 20


@dataclass(frozen=True)
class Readiness:
    """Whether a retraining run could train now, on which window, and when it could if not."""

    ready: bool
    window: str | None = None  # the window it trains on (None: training.window)
    ready_after: str | None = None  # the partition after which the data should be there (None: not known)
    why: str = ""  # why it cannot train yet
    labelled_until: str | None = None  # the newest labelled, usable partition


def _between(config: PipelineConfig, first: str, last: str) -> int:
    return partitions_between(config, date.fromisoformat(first), date.fromisoformat(last))


def plan(
    config: PipelineConfig,
    episode: Episode | None,
    decision: Decision,
    readiness: Callable[[frozenset[Rule]], Readiness],
    onset: str | None = None,
    hold: str | None = None,
) -> tuple[Episode | None, Decision]:
    """Return the night's episode (None: none open and none opened) and the decision with what it does tonight.

    `readiness(rules)` says whether a run could train now; it is asked only when a request could go out. `hold`:
    why no request goes out automatically now (an operator rolled the champion back), only on force_retrain.
    """
    ds, rules = decision.ds, frozenset(decision.rules)
    if episode is None or not episode.open:
        if not decision.retrain:
            return None, decision.model_copy(update={"outcome": "no rule fired"})
        episode = Episode(
            model_name=config.model.registered_name,
            rules=sorted(rules),
            reasons=decision.reasons[:MAX_REASONS],
            opened_ds=ds,
            onset=onset if Rule.DRIFT in rules else None,
            champion_version=decision.model_version,
            last_fired_ds=ds,
            last_alert_ds=ds,
        )
        alert: str | None = "opened"
    else:
        episode, alert = episode.model_copy(deep=True), None
        if ds < episode.opened_ds:
            return episode, _said(decision, episode, f"a night before episode {episode.id} opened: no request")
        if decision.retrain:
            episode.rules = sorted(set(episode.rules) | rules)
            episode.last_fired_ds = max(episode.last_fired_ds, ds)
            if Rule.DRIFT in rules and episode.onset is None:
                episode.onset = onset  # drift joined an episode a performance rule opened
        elif (
            episode.state != EpisodeState.REQUESTED
            and _between(config, episode.last_fired_ds, ds) >= config.retraining.drift_consecutive_nights
        ):
            episode.state, episode.closed_ds = EpisodeState.CLOSED, ds
            episode.outcome = (
                f"closed: no retraining rule fired for {_between(config, episode.last_fired_ds, ds)} partitions"
            )
            return episode, _said(decision, episode, episode.outcome)

    request, outcome = _request(config, episode, decision, rules, readiness, hold)
    if request is not None:
        episode.state, episode.request_ds, episode.request_window = EpisodeState.REQUESTED, ds, request
        episode.requests += 1
        episode.last_alert_ds = ds  # a request is progress: the reminder clock starts again
        episode.ready_after, episode.outcome = None, "retraining requested on " + ds
    elif alert is None and _reminder_due(config, episode, ds):
        alert = "reminder"
        episode.last_alert_ds = ds
        episode.reminders += 1
    said = _said(decision, episode, outcome)
    return episode, said.model_copy(
        update={"request": request is not None, "request_window": request or None, "alert": alert}
    )


def _request(
    config: PipelineConfig,
    episode: Episode,
    decision: Decision,
    rules: frozenset[Rule],
    readiness: Callable[[frozenset[Rule]], Readiness],
    hold: str | None = None,
) -> tuple[str | None, str]:
    """The window to request tonight ("" for the config's) or None, and what the night does in words."""
    ds, name = decision.ds, f"episode {episode.id or '(new)'}"
    if episode.request_ds == ds:
        return None, f"{name}: this night already requested retraining (a rerun never requests twice)"
    forced = Rule.FORCE in rules
    if hold and not forced:
        episode.outcome = hold
        return None, f"{name}: {hold}"
    if episode.state == EpisodeState.REQUESTED and not forced:
        return None, f"{name}: retraining was requested on {episode.request_ds}; waiting for its outcome"
    wanted = frozenset(episode.rules) | rules
    ready = readiness(wanted)
    moved = bool(episode.retry_after and ready.labelled_until and ready.labelled_until >= episode.retry_after)
    # a drift onset found after the rejected candidate's window began: the days since it are a window not yet tried
    moved = moved or bool(episode.onset and episode.tried_from and episode.tried_from < episode.onset)
    if episode.state == EpisodeState.BACKOFF and not forced and not moved:
        return None, (
            f"{name}: retraining did not help; the next request waits until the labelled window reaches "
            f"{episode.retry_after} ({config.retry_after_partitions} partitions on)"
        )
    if episode.not_before and ds < episode.not_before and not forced:
        ready = Readiness(
            False, ready_after=episode.not_before, why="the last requested run found too few usable labels"
        )
    if not ready.ready and not forced:  # an operator's force_retrain asks now; a run that cannot train skips
        episode.ready_after = ready.ready_after
        when = f"after the partition of {ready.ready_after}" if ready.ready_after else "once more labels arrive"
        episode.outcome = f"waiting for labelled data: a run can train {when}"
        return None, f"{name}: waiting for labelled data; retraining is requested {when} ({ready.why})"
    return ready.window or "", f"{name}: retraining requested" + (f" ({ready.window} window)" if ready.window else "")


def _reminder_due(config: PipelineConfig, episode: Episode, ds: str) -> bool:
    every = config.retraining.reminder_partitions
    return every is not None and bool(episode.last_alert_ds) and _between(config, episode.last_alert_ds, ds) >= every


def _said(decision: Decision, episode: Episode, outcome: str) -> Decision:
    return decision.model_copy(update={"episode": episode, "outcome": outcome})


def after_promotion(episode: Episode | None, version: str, ds: str) -> Episode | None:
    """Close the open episode: a new champion answered it."""
    if episode is None:
        return None
    return episode.model_copy(
        update={
            "state": EpisodeState.CLOSED,
            "closed_ds": ds,
            "candidates": [*episode.candidates, version],
            "outcome": f"closed: v{version} promoted",
        }
    )


def after_rebaseline(episode: Episode, version: str, ds: str, who: str) -> Episode:
    """Close a drift episode whose shift was acknowledged: the champion's reference now holds it."""
    return episode.model_copy(
        update={
            "state": EpisodeState.CLOSED,
            "closed_ds": ds,
            "candidates": [*episode.candidates, version] if version else episode.candidates,
            "outcome": f"closed: shift acknowledged ({who}), the champion's drift reference was rebaselined",
        }
    )


def backoff(
    config: PipelineConfig, episode: Episode, version: str, window_end: str, window_start: str | None = None
) -> tuple[Episode, bool]:
    """Wait until the labelled window has moved after a candidate that did not help; True: alert "not helping".

    The alert goes out once per episode, and only when the champion fails a performance rule (an old champion that
    a newer candidate does not beat is no alarm).
    """
    changed = episode.model_copy(deep=True)
    changed.state = EpisodeState.BACKOFF
    changed.candidates = [*episode.candidates, version]
    changed.tried_from = window_start
    changed.retry_after = shift(config, date.fromisoformat(window_end), config.retry_after_partitions).isoformat()
    changed.outcome = (
        f"v{version} (trained up to {window_end}) was not better: retraining is not helping; the next request waits "
        f"until the labelled window reaches {changed.retry_after}"
    )
    alert = Rule.PERFORMANCE in episode.rules and not episode.not_helping_alerted
    changed.not_helping_alerted = episode.not_helping_alerted or alert
    return changed, alert


def back_to_waiting(episode: Episode | None, why: str, ready_after: str | None) -> Episode | None:
    """A requested run found too little labelled data: the episode waits again, and a later night requests."""
    if episode is None or episode.state != EpisodeState.REQUESTED:
        return None
    return episode.model_copy(
        update={
            "state": EpisodeState.WAITING,
            "ready_after": ready_after,
            "not_before": ready_after,
            "request_ds": None,
            "outcome": f"the requested run could not train yet: {why[:300]}",
        }
    )
