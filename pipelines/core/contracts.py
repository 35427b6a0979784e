"""The typed values the steps hand each other (and Airflow passes between tasks as XCom).

Pydantic models, so a value that crosses a task boundary comes back as the same class with its nested
values and enums (Airflow 3 serialises them with `model_dump` and restores them with `model_validate`;
the workers' `[core] allowed_deserialization_classes` must admit `pipelines.*`). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    """Base of the values passed between steps: unknown fields are refused, so a renamed field fails loudly."""

    model_config = ConfigDict(extra="forbid")


class Record(BaseModel):
    """Base of values read back from storage written by older releases: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, pinned (never an alias that can move underneath a reader)."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class Alias(StrEnum):
    """The registry's alias names, and where `bootstrap_or_challenge` put a new candidate."""

    CHAMPION = "champion"  # scores the nights; a deployment's first model goes straight here
    CHALLENGER = "challenger"  # a candidate going through the gate
    PREVIOUS = "previous"  # the champion before the last promotion: where rollback_model goes back to
    REFUSED = "refused"  # a first model below the promotion floors: registered, given no alias


class AuditAction(StrEnum):
    """What an audit log entry records."""

    BOOTSTRAP = "bootstrap"  # the first champion
    PROMOTE = "promote"
    REJECT = "reject"
    ROLLBACK = "rollback"
    RESTORE = "restore"  # a champion re-established by hand after the alias was lost
    ACCEPT_QUARANTINE = "accept_quarantine"  # an operator scored a night that failed validation
    ADOPT = "adopt"  # an external model's champion alias was moved outside this product: its version is adopted
    # the champion's drift reference and validation profile refreshed to a recent window (a shift acknowledged as
    # harmless: by the gate's evidence after a rejected candidate, or by an operator); `note` names the new run
    REBASELINE = "rebaseline"


# the actions that point `champion` at an entry's `to_version`
MOVES = (AuditAction.BOOTSTRAP, AuditAction.PROMOTE, AuditAction.ROLLBACK, AuditAction.RESTORE, AuditAction.ADOPT)


class AlertEvent(StrEnum):
    """The events the alerts are sent for (`alerts.events` in the config)."""

    QUARANTINE = "quarantine"
    DATA_QUALITY = "data_quality"
    RETRAIN_DECISION = "retrain_decision"  # a retraining episode opened (once per episode)
    EPISODE_REMINDER = "episode_reminder"  # an episode still open after retraining.reminder_partitions partitions
    NOT_HELPING = "retraining_not_helping"  # a candidate trained on the newest data did not beat a failing champion
    PROMOTION = "promotion"
    REJECTION = "rejection"
    ROLLBACK = "rollback"
    TASK_FAILURE = "task_failure"


class PromotionPath(StrEnum):
    """What retrain_model does after the gate (the DAG file maps each to its tasks)."""

    REJECT = "reject"  # the gate failed, or a first model missed the floors
    DONE = "done"  # the first model became champion: nothing more to do
    ASK_APPROVAL = "ask_approval"  # passed; promotion.require_approval asks a person first
    PROMOTE = "promote"  # passed; promoted at once


class TrainingWindow(Contract):
    """The labelled partitions a candidate trains on, the window mode used and the drift onset it started from."""

    days: list[str]
    mode: str
    onset: str | None = None

    def describe(self) -> str:
        return self.mode + (f" from the drift onset {self.onset}" if self.onset else "")


class Candidate(Contract):
    """A trained and registered model version with its held-out metrics and the days it trained and was tested on."""

    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    train_days: list[str]
    holdout_days: list[str]

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version, self.run_id)


class ModelCard(Record):
    """What a model version was trained on and why, read from its lineage artifact (`training_partitions.json`)."""

    partitions: dict[str, str] = Field(default_factory=dict)  # partition date -> sha256 of its files
    train_days: list[str] = Field(default_factory=list)
    holdout_days: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)  # held-out
    lineage: dict[str, str] = Field(default_factory=dict)  # reason, airflow_run_id, training.window
    kind: str = "binary"  # model.kind when it was trained
    classes: list[str] = Field(default_factory=list)  # a classifier's classes as text, in its probability order
    external: bool = False  # registered elsewhere: the card describes its monitoring reference, not its training
    # the drop of retraining.metric one night of typical size shows by chance (performance.metric_noise)
    metric_noise: dict[str, float] = Field(default_factory=dict)

    @property
    def reason(self) -> str:
        return self.lineage.get("reason", "unknown")


CI_LEVEL = 0.95  # the paired bootstrap interval of the gate


class Comparison(Record):
    """Candidate minus champion on the gate's metric, with its paired bootstrap interval."""

    difference: float
    ci_low: float
    ci_high: float
    samples: int = 0

    def describe(self) -> str:
        """The difference and its interval in words, as every surface shows it."""
        return f"{self.difference:+.4f} ({CI_LEVEL:.0%} CI {self.ci_low:+.4f}..{self.ci_high:+.4f})"


class GateResult(Record):
    """The gate's verdict on a candidate and the evidence behind it (a first model has no comparison)."""

    passed: bool
    candidate: str
    champion: str | None = None
    bootstrap: bool = False
    evaluation_days: list[str] = Field(default_factory=list)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    comparison: Comparison | None = None
    reasons: list[str] = Field(default_factory=list)
    reports: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    # monitoring.segments: candidate against champion per segment of the evaluation rows, and the large segments on
    # which the candidate is clearly worse (a passing candidate then goes to approval)
    segments: list[dict[str, Any]] = Field(default_factory=list)
    concerns: list[str] = Field(default_factory=list)
    train_days: dict[str, list[str]] = Field(default_factory=dict)  # candidate and champion: the days each trained on

    @property
    def pair(self) -> str | None:
        """The comparison's folder name (`v<candidate>_vs_v<champion>`), None without a comparison."""
        if self.comparison is None or self.champion is None:
            return None
        return f"v{self.candidate}_vs_v{self.champion}"


class Approval(Contract):
    """The answer of the approval step: the options chosen, by whom, and whether it timed out."""

    chosen_options: list[str] = Field(default_factory=list)
    responded_by: str | None = None
    timed_out: bool = False

    @property
    def approved(self) -> bool:
        return self.chosen_options == ["Approve"]

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Approval:
        """Read Airflow's human-in-the-loop event (`responded_by_user` is a dict with name and id, or a string)."""
        user = event.get("responded_by_user")
        who = (user.get("name") or user.get("id")) if isinstance(user, dict) else user
        return cls(
            chosen_options=list(event.get("chosen_options") or []),
            responded_by=who or None,
            timed_out=bool(event.get("timedout")),
        )


class AuditEntry(Record):
    """One audited alias move or refusal, as the audit log holds it."""

    at: str = ""  # set by the audit log when the entry is appended
    action: AuditAction
    model: str
    from_version: str | None = None
    to_version: str
    reason: str = ""
    approved_by: str = ""
    airflow_run_id: str = ""
    gate: GateResult | None = None
    note: str | None = None
    hash: str = ""


class ValidatedPartition(Contract):
    """A partition that passed validation (possibly with data-quality warnings), and the champion it was checked for."""

    ds: str
    model: ModelRef
    rows: int
    expectations: int
    warnings: list[str] = Field(default_factory=list)
    warned_columns: list[str] = Field(default_factory=list)  # feature columns only
    seconds: float = 0.0


class ScoringSummary(Contract):
    """What one scoring run did: rows, model version, score statistics, speed and the file it published."""

    ds: str
    rows: int
    model_name: str
    model_version: str
    mlflow_run_id: str
    mean_score: float
    positive_rate: float
    seconds: float  # the whole task's scoring, model load included
    rows_per_second: float  # rows per second of scoring after the model load (the progress lines' figure)
    peak_rss_mb: float
    path: str
    load_seconds: float = 0.0  # loading (and verifying the compiled form of) the model version
    engine: str = "sklearn"  # compiled: the verified compiled trees scored the rows they can score exactly
    engine_reason: str = ""  # why scikit-learn scored (empty when the compiled model did)
    engine_rows: dict[str, int] = Field(default_factory=dict)  # rows scored by each engine
    shards: int = 0  # 0: scored by one task; else the mapped shards it was committed from

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.model_name, self.model_version, self.mlflow_run_id)


class RowSlice(Contract):
    """Rows [start, stop) of one row group of one file of a partition."""

    file: str  # the file's name inside incoming/ds=...
    row_group: int
    start: int
    stop: int


class Shard(Contract):
    """One slice of a large partition, scored by one mapped task; `count` shards make the partition."""

    ds: str
    model: ModelRef
    index: int
    count: int
    rows: int
    slices: list[RowSlice]


class ShardScored(Contract):
    """What scoring one shard wrote: its hidden file, rows, score statistics and engines."""

    ds: str
    index: int
    count: int
    rows: int
    path: str
    score_sum: float
    positives: float
    compiled_rows: int
    engine: str
    engine_reason: str
    seconds: float
    load_seconds: float  # of `seconds`: opening the registry, loading and verifying the model
    peak_rss_mb: float


class NightSummary(Contract):
    """A monitored night: drift, data-quality warnings, estimated performance and its reports."""

    ds: str
    model_version: str
    airflow_run_id: str
    rows: int
    drift_share: float
    drifted_columns: list[str]
    warned_columns: list[str]
    validation_warnings: list[str]
    score_drifted: bool
    estimated_roc_auc: float | None  # None when it cannot be estimated (JSON has no NaN)
    estimated_accuracy: float | None
    reports: dict[str, str]
    estimated_metrics: dict[str, float] = Field(default_factory=dict)  # the kind's estimates (core.kinds.ESTIMATED)


class LabelledNight(Contract):
    """A scored night whose labels were (re-)evaluated: realised performance and label coverage."""

    ds: str
    model_version: str
    label_coverage: float
    roc_auc: float | None  # binary models
    label_issues: list[str] = Field(default_factory=list)
    metric: str = "roc_auc"  # retraining.metric, whichever the kind
    value: float | None = None  # its realised value


class Rule(StrEnum):
    """The kinds of retraining rule, which an episode's handling depends on."""

    FORCE = "force"  # force_retrain on the run
    DRIFT = "drift"  # the drift share rule: retraining waits until labelled data since the onset can exist
    PERFORMANCE = "performance"  # realised or estimated metric, floors: acts at once
    AGE = "age"  # the champion's data is too old: acts at once


class EpisodeState(StrEnum):
    WAITING = "waiting"  # open; no retraining requested yet (labels since the onset not there yet)
    REQUESTED = "requested"  # the retraining Asset event was emitted; waiting for the run's outcome
    BACKOFF = "backoff"  # a candidate trained on the newest data was not better: waits for the window to move
    CLOSED = "closed"


class Episode(Record):
    """One problem the monitoring found, from the night it opened to its outcome (`storage.episodes`).

    While it is open, further nights that fire the same rules do not request again (`steps.episodes.plan`).
    """

    id: int | None = None  # set when first stored
    model_name: str
    state: EpisodeState = EpisodeState.WAITING
    rules: list[Rule] = Field(default_factory=list)  # every kind of rule that fired while it was open
    reasons: list[str] = Field(default_factory=list)  # the opening night's reasons, then the newest night's
    opened_ds: str
    onset: str | None = None  # the first drifted partition of the streak (drift episodes)
    champion_version: str = ""  # the champion when it opened
    last_fired_ds: str = ""  # the newest night a rule fired
    ready_after: str | None = None  # when the labelled data a training run needs should exist
    not_before: str | None = None  # a requested run could not train: no new request before this night
    request_ds: str | None = None  # the night that emitted the newest request
    requests: int = 0
    request_window: str | None = None  # the training window the newest request asked for (None: the config's)
    candidates: list[str] = Field(default_factory=list)  # versions trained for it
    retry_after: str | None = None  # backoff: request again once the labelled window reaches this partition
    tried_from: str | None = None  # backoff: the first partition of the window the rejected candidate trained on
    not_helping_alerted: bool = False
    last_alert_ds: str = ""  # the night of the opening alert, the newest reminder or request (the reminder clock)
    reminders: int = 0
    closed_ds: str | None = None
    outcome: str = ""  # why it closed, or what it waits for

    @property
    def open(self) -> bool:
        return self.state != EpisodeState.CLOSED


class Decision(Contract):
    """Whether a retraining rule fired after a night (every rule in words), and what the night's episode does."""

    retrain: bool  # a rule fired
    reasons: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)  # the kind of each reason, in order
    ds: str = ""
    model_version: str = ""
    request: bool = False  # emit the retraining Asset event tonight (one per episode, when a run can train)
    request_window: str | None = None  # the window the request asks for (None: training.window)
    alert: Literal["opened", "reminder"] | None = None  # the episode's alert tonight, if any
    episode: Episode | None = None
    outcome: str = ""  # what happens, in words (requested, waiting until ..., already requested, ...)


class Lesson(Contract):
    """What a rejected candidate taught the open episode (`flows.retraining.learn_from_rejection`)."""

    action: Literal["rebaselined", "backoff", "closed", "none"] = "none"
    episode: Episode | None = None
    rebaseline: AuditEntry | None = None  # the audited rebaseline (a harmless drift shift)
    not_helping: bool = False  # the episode's one "retraining is not helping" alert goes out now
    removed_artifacts: list[str] = Field(default_factory=list)  # rejected versions whose artifacts retention removed
    summary: str = ""


class RetrainRequest(Record):
    """The extra of the retraining Asset event (what batch_scoring asks, and what any other DAG or tool may send).

    Read leniently (unknown keys ignored), as another tool may emit the event.
    """

    ds: str | None = None
    reasons: list[str] = Field(default_factory=list)
    episode: int | None = None  # the drift or performance episode it belongs to
    window: str | None = None  # sliding or since_drift_onset: the window a run can train on now (None: the config's)

    def lines(self) -> list[str]:
        return [f"{self.ds}: {reason}" for reason in self.reasons]


class NightRecord(Contract):
    """One night's row of the monitoring history (`storage.history`, table `nights`): the key and the facts.

    `record_night` replaces the row with these facts; `update_night` adds the facts that are set.
    """

    ds: str
    model_name: str
    model_version: str
    rows: int | None = None
    validation_success: bool | None = None
    validation_failures: list[str] | None = None
    validation_warnings: list[str] | None = None  # findings of checks set to warn (the night was scored)
    drift_share: float | None = None
    drifted_columns: list[str] | None = None
    score_drifted: bool | None = None
    drift_stats: dict[str, Any] | None = None
    estimated_roc_auc: float | None = None
    estimated_accuracy: float | None = None
    realised_roc_auc: float | None = None
    realised_accuracy: float | None = None
    realised_metrics: dict[str, Any] | None = None
    estimated_metrics: dict[str, float] | None = None  # the kind's estimates (CBPE, direct loss estimation)
    metric: str | None = None  # retraining.metric, the one the page and the decision follow
    estimated_metric: float | None = None
    realised_metric: float | None = None
    label_coverage: float | None = None
    decision: str | None = None
    decision_reasons: list[str] | None = None
    segment_estimates: dict[str, Any] | None = None  # monitoring.segments: per segment of the night's sample
    segment_realised: dict[str, Any] | None = None  # per segment once labels arrived, with intervals
    episode_id: int | None = None  # the episode the night's rules fired in
    request_outcome: str | None = None  # what the night's retraining request did (requested, waiting, ...)
    request_result: str | None = None  # what the retraining run it started did (skipped and why, rejected, promoted)
    request_run_id: str | None = None  # that retraining run
    reports: dict[str, str] | None = None
    scoring_rows_per_s: float | None = None
    scoring_peak_rss_mb: float | None = None
    task_seconds: dict[str, float] | None = None
    scoring_engine: str | None = None  # compiled or sklearn
    scoring_engine_rows: dict[str, int] | None = None  # rows scored by each engine
    scoring_engine_reason: str | None = None  # why scikit-learn scored
    airflow_run_id: str | None = None

    @classmethod
    def of_night(cls, night: NightSummary, scored: ScoringSummary, model_name: str, **facts: Any) -> NightRecord:
        """The row of a monitored night: what its summary and its scoring say, and `facts` (which win)."""
        said: dict[str, Any] = {
            "ds": night.ds,
            "model_name": model_name,
            "model_version": night.model_version,
            "rows": night.rows,
            "validation_success": True,
            "validation_failures": [],
            "validation_warnings": night.validation_warnings,
            "drift_share": night.drift_share,
            "drifted_columns": night.drifted_columns,
            "score_drifted": night.score_drifted,
            "reports": night.reports,
            "scoring_rows_per_s": scored.rows_per_second,
            "scoring_peak_rss_mb": scored.peak_rss_mb,
            "scoring_engine": scored.engine,
            "scoring_engine_rows": scored.engine_rows,
            "scoring_engine_reason": scored.engine_reason[:500],
            "airflow_run_id": night.airflow_run_id,
        }
        return cls(**(said | facts))


class TriggerParams(BaseModel):
    """Base of a DAG's trigger Params, read by its tasks as one typed value (Airflow validated them first).

    Keys a trigger's conf adds beyond the declared Params are ignored, as Airflow itself does.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class ScoringParams(TriggerParams):
    """batch_scoring's Params."""

    ds: date | None = None  # the night to score; empty: the run's data interval
    force_retrain: bool = False
    accept_quarantine: bool = False  # score a night that failed validation (audited, with who accepted it)
    acknowledge_drift: bool = False  # the shift up to this night is the new normal: rebaseline (audited)


class RetrainParams(TriggerParams):
    """retrain_model's Params."""

    window_end: date | None = None
    window: Literal["sliding", "since_drift_onset"] | None = None
    window_partitions: int | None = Field(None, ge=2, le=1000)
    reason: str = Field("manual", max_length=500)


class RollbackParams(TriggerParams):
    """rollback_model's Params."""

    target_version: str | None = Field(None, pattern=r"^[0-9]{1,9}$")
    reason: str = Field(min_length=3, max_length=300)
