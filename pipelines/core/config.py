"""The pipeline configuration: one YAML file loaded into one validated, typed object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.core.contracts import AlertEvent
from pipelines.core.errors import ConfigError, redact
from pipelines.core.kinds import DEFAULT_FLOORS, DEFAULT_REALISED_FLOOR, METRICS, PRIMARY, Kind
from pipelines.core.paths import MONITORING, DataPath, LakePath

CONFIG_ENV_VAR = "PIPELINE_CONFIG"
# Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable, so it would leak between configs.
TRACKING_URI_ENV_VAR = "PIPELINE_MLFLOW_TRACKING_URI"
HISTORY_URL_ENV_VAR = "PIPELINE_HISTORY_URL"
REPORT_STORE_ENV_VAR = "PIPELINE_REPORT_STORE"  # overrides monitoring.report_store
DATA_ROOT_ENV_VAR = "PIPELINE_DATA_ROOT"  # overrides data_root (a folder, or s3://bucket/prefix)
# The audit log's HMAC key: the Airflow Variable `pipeline_audit_key` in its environment form, so workers, the
# api-server and the CLI read the same secret without a database call.
AUDIT_KEY_ENV_VAR = "AIRFLOW_VAR_PIPELINE_AUDIT_KEY"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "config" / "pipeline.yaml"

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# How often partitions come: a name, or any cron expression (the run fires at its ticks and scores the
# partition whose period began at the previous tick). Every count of time in the config is in partitions.
CADENCES = {"daily": "0 2 * * *", "weekly": "0 2 * * 1", "monthly": "0 2 1 * *", "yearly": "0 2 1 1 *"}
# Keys renamed when every window started counting partitions instead of days.
RENAMED_KEYS = {
    ("schedule",): "cadence (daily, weekly, monthly, yearly or a cron expression)",
    ("label_delay_days",): "label_delay_partitions",
    ("training", "window_days"): "training.window_partitions",
    ("training", "min_days_since_onset"): "training.min_partitions_since_onset",
    ("training", "holdout_days"): "training.holdout_partitions",
    ("retraining", "max_model_age_days"): "retraining.max_model_age_partitions",
}


@dataclass(frozen=True)
class StoreLocation:
    """Where published report folders live: a bucket and a key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _literal_path(value: object) -> object:
    """A folder as written: `~` and `$VARIABLES` are not expanded, so they are refused rather than made folders."""
    if isinstance(value, str) and (value.startswith("~") or "$" in value):
        raise ValueError(
            f"{value!r}: the config does not expand ~ or $VARIABLES (it would make a folder of that name); write the "
            "path itself, relative to the config file or absolute, or set it through the environment variable"
        )
    return value


def _without_secret(url: str | None, variable: str) -> str | None:
    """Refuse a URL that carries a password or query-string parameters: secrets live in the environment."""
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.password or parts.query:
            raise ValueError(
                f"{redact(url)!r} carries a password or parameters: secrets never go in the YAML; set ${variable} in "
                "the environment (or an Airflow connection) instead"
            )
    return url


def parse_store_url(url: str) -> StoreLocation:
    """Return the bucket and prefix of `s3://bucket/prefix`; refuse anything else, and any credential in it."""
    try:
        where = LakePath.from_url(url)
    except ValueError as exc:
        raise ConfigError(redact(f"report store: {exc}")) from exc
    return StoreLocation(where.bucket, where.key)


class _Section(BaseModel):
    # .inf or NaN in a count of minutes or a threshold is a typo that would fail far from the key (OverflowError)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Features(_Section):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class PartitionWait(_Section):
    timeout_minutes: Annotated[float, Field(gt=0, le=366 * 24 * 60)] = 360  # at most a year
    poke_interval_seconds: Annotated[float, Field(gt=0, le=24 * 3600)] = 300


Severity = Literal["quarantine", "warn"]


class Severities(_Section):
    """What a failed check does: `quarantine` refuses the partition, `warn` scores it and records a data-quality warning.

    Broken data (an unreadable file, a missing or re-typed column, null or duplicate ids) is always quarantined:
    it cannot be scored. These checks say the data has moved (or is too small) and warn by default.
    """

    row_count: Severity = "quarantine"
    range: Severity = "warn"
    unknown_categories: Severity = "warn"
    null_rate: Severity = "warn"
    long_values: Severity = "warn"  # a categorical value above validation.max_value_chars (cut there when read)


class Validation(_Section):
    # streamed: the suite's counts added up record batch by record batch (flat memory at any size);
    # great_expectations: the whole partition in Great Expectations' pandas engine (memory grows with the partition)
    engine: Literal["streamed", "great_expectations"] = "streamed"
    severity: Severities = Severities()
    categorical_unknown_tolerance: Fraction = 0.01
    null_rate_tolerance: Fraction = 0.05
    range_margin: Annotated[float, Field(ge=0)] = 0.25
    range_tolerance: Fraction = 0.01
    min_rows: Annotated[int, Field(ge=1)] = 1
    # the longest text value (a category or an id) in characters: a longer one is cut to this length wherever it
    # is read (scoring, reports, samples), and validation warns (severity.long_values) or, for an id, quarantines
    max_value_chars: Annotated[int, Field(ge=16, le=1_000_000)] = 1000


class PartitionRange(_Section):
    """A range of partitions, both ends included."""

    first: date
    last: date

    @model_validator(mode="after")
    def _ordered(self) -> PartitionRange:
        if self.last < self.first:
            raise ValueError(f"last {self.last} is before first {self.first}")
        return self


class ModelSettings(_Section):
    registered_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    # binary (0/1 labels, a positive-class probability), multiclass (class labels, one probability per class) or
    # regression (a number)
    kind: Kind = Kind.BINARY
    decision_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5  # binary only
    hyperparameters: dict[str, float | int | str | None] = Field(default_factory=dict)  # of the built-in trainer
    # "package.module:function": your own training code. Called with numeric=[...], categorical=[...], kind=...,
    # seed=...; returns an unfitted scikit-learn estimator (a Pipeline included). The module must be importable on
    # every worker (docs/configuration.md). Unset: the built-in HistGradientBoosting model of the kind.
    trainer: (
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")]
        | None
    ) = None
    # true: the champion is whatever the MLflow alias points at, registered by someone else (any scikit-learn or
    # pyfunc model); drift is measured against `reference`, and retraining is off unless a trainer is given
    external: bool = False
    reference: PartitionRange | None = None  # the partitions an external model is monitored against

    @model_validator(mode="after")
    def _external_needs_reference(self) -> ModelSettings:
        if self.external and self.reference is None:
            raise ValueError(
                "an external model needs model.reference: {first: YYYY-MM-DD, last: YYYY-MM-DD}, the partitions its "
                "drift is measured against (its training data is unknown here)"
            )
        return self

    @property
    def retrains(self) -> bool:
        """Whether this product trains the model: always for its own, for an external one only with a trainer."""
        return not self.external or self.trainer is not None


class MlflowSettings(_Section):
    store_dir: Path = Path("mlflow")
    tracking_uri: str | None = None
    experiment: str = "nightly-ml"

    @field_validator("tracking_uri")
    @classmethod
    def _no_secret_in_tracking_uri(cls, value: str | None) -> str | None:
        return _without_secret(value, TRACKING_URI_ENV_VAR)

    @field_validator("store_dir", mode="before")
    @classmethod
    def _literal_store_dir(cls, value: object) -> object:
        return _literal_path(value)


class Training(_Section):
    # sliding: the newest window_partitions labelled partitions. since_drift_onset: from the first partition of the
    # drift streak the history recorded against the champion (sliding when there is none), once at least
    # min_partitions_since_onset labelled partitions exist after the onset. Counts are partitions (see `cadence`).
    window: Literal["sliding", "since_drift_onset"] = "since_drift_onset"
    window_partitions: Annotated[int, Field(ge=2)] = 28
    min_partitions_since_onset: Annotated[int, Field(ge=2)] = 6
    holdout_partitions: Annotated[int, Field(ge=1)] = 3
    min_rows: Annotated[int, Field(ge=10)] = 1000
    reference_sample_rows: Annotated[int, Field(ge=100)] = 50_000
    # the training frame's cells (rows x features) at most: a wide window is sampled evenly across its partitions
    # to fit, so training memory stays bounded at any width
    max_cells: Annotated[int, Field(ge=1_000_000)] = 30_000_000
    seed: int = 42
    threads: Annotated[int, Field(ge=0)] = 0  # native threads of a training task (0: all cores)


class Scoring(_Section):
    # auto: the compiled trees when they verify against scikit-learn, else scikit-learn (the reason is recorded);
    # compiled: refuse to score without them; sklearn: never compile nor load them
    engine: Literal["auto", "compiled", "sklearn"] = "auto"
    batch_rows: Annotated[int, Field(ge=1024)] = 65_536
    predict_chunk_rows: Annotated[int, Field(ge=256)] = 65_536
    threads: Annotated[int, Field(ge=0)] = 0
    progress_every_seconds: Annotated[float, Field(gt=0, le=24 * 3600)] = 10
    # a partition above shard_rows is scored as mapped tasks (one per shard, on any worker) and committed whole
    shard_rows: Annotated[int, Field(ge=1)] = 4_000_000
    max_shards: Annotated[int, Field(ge=2, le=256)] = 8  # far below Airflow's max_map_length (1024)


DriftMethod = Literal["psi", "ks", "wasserstein", "jensenshannon", "chisquare"]
NUMERIC_METHODS, CATEGORICAL_METHODS = (
    {"psi", "ks", "wasserstein", "jensenshannon"},
    {"psi", "jensenshannon", "chisquare"},
)


class ColumnDrift(_Section):
    method: DriftMethod
    threshold: Annotated[float, Field(gt=0)]


class Drift(_Section):
    """Per-column drift tests. KS and chi-square thresholds are p-values (drift below); the others are distances (drift above)."""

    numeric_method: DriftMethod = "wasserstein"
    numeric_threshold: Annotated[float, Field(gt=0)] = 0.1
    categorical_method: DriftMethod = "jensenshannon"
    categorical_threshold: Annotated[float, Field(gt=0)] = 0.1
    score_method: DriftMethod = "wasserstein"
    score_threshold: Annotated[float, Field(gt=0)] = 0.1
    per_column: dict[str, ColumnDrift] = Field(default_factory=dict)
    # When a model is registered, each column's statistic is measured between chunks of its reference data the
    # size of a typical partition; the alarm threshold is this quantile of that no-drift distribution (for p-value
    # tests the matching low quantile) when it is stricter than the configured threshold would be.
    calibrate: bool = True
    calibration_quantile: Annotated[float, Field(ge=0.9, lt=1.0)] = 0.995
    calibration_draws: Annotated[int, Field(ge=50, le=5000)] = 200
    # False alarms add up with width: a feature column is flagged only when its noise p-value (how often a night
    # without drift goes this far, from the calibration draws) survives Benjamini-Hochberg control of the false
    # discovery rate at this level across the feature columns, as well as its threshold
    fdr: Annotated[float, Field(gt=0, le=0.5)] = 0.01


class Monitoring(_Section):
    sample_rows: Annotated[int, Field(ge=1000)] = 100_000
    # a categorical column's reports and drift test keep its most frequent categories (in the night or the
    # reference) and count the rest as one "(other)" category: bounded time and memory at any number of categories
    max_categories: Annotated[int, Field(ge=2, le=10_000)] = 50
    # the sample's cells (rows x monitored columns) at most: a wide table is sampled in fewer rows, so a night's
    # memory does not grow with its width (the reference a model stores is capped alike)
    sample_cells: Annotated[int, Field(ge=100_000)] = 10_000_000
    # the columns Evidently renders each night (drifted ones first, then the closest to their thresholds, and the
    # model's outputs); every column is tested, ranked in the night's overview and has a page of its own
    report_columns: Annotated[int, Field(ge=1, le=200)] = 20
    threads: Annotated[int, Field(ge=0)] = 0  # native threads of a monitoring task (0: all cores)
    # feature columns whose values split the monitoring: per segment (column = value) the night's share and score
    # drift, the estimated and the realised metric with its interval, and the segments that fell furthest below their
    # reference. Each column keeps its segment_values largest values (by rows); the rest is one "(other)" segment.
    segments: list[str] = Field(default_factory=list, max_length=10)
    segment_values: Annotated[int, Field(ge=1, le=50)] = 8
    min_segment_rows: Annotated[int, Field(ge=20)] = 200  # a smaller segment is shown but never ranked
    # a night's HTML reports are removed (here and in the report store) once it is this many partitions old; its
    # JSON summaries and its history row stay, and the page says "expired" (null: kept forever)
    keep_reports_partitions: Annotated[int, Field(ge=1)] | None = 180
    drift: Drift = Drift()
    history_url: str | None = None
    # s3://bucket/prefix: each night's reports and quarantine records are published there too, and the monitoring
    # page serves them from there (pipelines/report_store.py); credentials from the environment, never here
    report_store: str | None = None

    @field_validator("history_url")
    @classmethod
    def _no_secret_in_history_url(cls, value: str | None) -> str | None:
        return _without_secret(value, HISTORY_URL_ENV_VAR)

    @field_validator("report_store")
    @classmethod
    def _a_store_url(cls, value: str | None) -> str | None:
        if value:
            try:
                parse_store_url(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return value or None


ALERT_EVENTS: tuple[AlertEvent, ...] = tuple(AlertEvent)


class RetrainPolicy(_Section):
    """Retrain when any rule fires; a rule set to null is off."""

    drift_share_threshold: Fraction | None = 0.25
    drift_consecutive_nights: Annotated[int, Field(ge=1)] = 3
    # defaults by model.kind: roc_auc (binary), macro_f1 (multiclass), rmse (regression)
    metric: str = "roc_auc"
    # a floor (a ceiling for a lower-is-better metric such as rmse); default 0.65 for binary, off otherwise
    realised_floor: float | None = None
    # drops: absolute for metrics in [0, 1], a fraction of the champion's held-out value for the others (rmse, mae)
    realised_max_drop: Fraction | None = 0.05
    estimated_max_drop: Fraction | None = 0.05
    max_model_age_partitions: Annotated[int, Field(ge=1)] | None = 90
    # An open episode (drift or performance) requests retraining once; while it stays open without progress, a
    # reminder goes out every reminder_partitions partitions (null: no reminders).
    reminder_partitions: Annotated[int, Field(ge=1)] | None = 7
    # After a candidate trained on the newest data did not beat a failing champion, the next request waits until the
    # labelled window has moved this many partitions (null: half of training.window_partitions).
    retry_after_partitions: Annotated[int, Field(ge=1)] | None = None


class Promotion(_Section):
    """The champion/challenger gate and the approval step."""

    metric: str = "roc_auc"  # defaults by model.kind, as retraining.metric
    # the gain is the improvement (lower rmse is a positive gain), in the metric's own units
    min_gain: Annotated[float, Field(ge=-1, le=1)] = 0.0
    # true: the lower end of the gain's 95% bootstrap interval must clear min_gain (not just the point estimate)
    require_significance: bool = True
    # a candidate's held-out metric must reach each floor (stay under it for lower-is-better metrics);
    # default {roc_auc: 0.65} for binary, none otherwise
    floors: dict[str, float] = Field(default_factory=dict)
    bootstrap_samples: Annotated[int, Field(ge=100, le=20_000)] = 1000
    require_approval: bool = False
    approval_timeout_hours: Annotated[float, Field(gt=0, le=366 * 24)] = 24
    # a rejected candidate keeps its registry entry, tags and audit entry; its artifacts (model, reference, reports of
    # its run) are removed this many days after the rejection (null: kept)
    keep_rejected_days: Annotated[float, Field(ge=0)] | None = 30
    # with monitoring.segments: a segment holding at least this share of the gate's rows on which the candidate is
    # clearly worse (its difference's interval below zero) sends a candidate that passed overall to approval
    segment_min_share: Fraction = 0.1


class EmailAlerts(_Section):
    """Email through an Airflow SMTP connection (host, port, login and password live in the connection)."""

    conn_id: str = "smtp_default"
    to: Annotated[list[str], Field(min_length=1)]
    from_email: str | None = None  # None: the connection's from_email


class WebhookAlerts(_Section):
    """A JSON POST in Slack's incoming-webhook format, through an Airflow `slackwebhook` connection."""

    conn_id: str = "alerts_webhook"


class Alerts(_Section):
    """Where alerts go; with neither target set they are only written to the task log."""

    base_url: str = "http://127.0.0.1:8080"  # the Airflow UI address that links in alerts point to
    events: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS))
    email: EmailAlerts | None = None
    webhook: WebhookAlerts | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL (for example https://airflow.example.com)")
        return value.rstrip("/")


class PipelineConfig(_Section):
    """Everything the pipelines need; paths are absolute once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)

    # the partitions: a local folder, or s3://bucket/prefix on an object store (keys from the environment)
    data_root: DataPath
    # where a worker keeps what it builds before publishing it (reports, quarantine records, the model cache);
    # unset: the data root when that is local, else ~/.cache/nightly-ml/<bucket>/<prefix>
    work_dir: Path | None = None
    id_column: str
    target: str
    timestamp_column: str | None = None
    features: Features
    cadence: str = "daily"
    start_date: date | None = None  # the first partition Airflow may run (backfills go back to it); None: the earliest
    label_delay_partitions: Annotated[int, Field(ge=0)] = 3  # labels of a partition arrive this many partitions later
    partition_wait: PartitionWait = PartitionWait()
    validation: Validation = Validation()
    model: ModelSettings
    mlflow: MlflowSettings = MlflowSettings()
    training: Training = Training()
    scoring: Scoring = Scoring()
    monitoring: Monitoring = Monitoring()
    retraining: RetrainPolicy = RetrainPolicy()
    promotion: Promotion = Promotion()
    alerts: Alerts = Alerts()
    audit_key: str | None = Field(default=None, repr=False, exclude=True)  # from the environment only, never the YAML
    # set when the model is one of a folder of configs: its file's stem, which names its DAGs and its monitoring page
    page_key: str = Field(default="", exclude=True)

    @field_validator("data_root", mode="before")
    @classmethod
    def _data_root(cls, value: object) -> object:
        if isinstance(value, str) and value.startswith("s3://"):
            return LakePath.from_url(value)
        if isinstance(value, str) and _SCHEME.match(value):
            raise ValueError(f"{redact(value)!r}: data_root is a folder or s3://bucket/prefix (two slashes)")
        return _literal_path(value)

    @field_validator("work_dir", mode="before")
    @classmethod
    def _literal_work_dir(cls, value: object) -> object:
        return _literal_path(value)

    @field_validator("cadence")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value not in CADENCES and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not {', '.join(CADENCES)} or a cron expression (for example '0 2 * * 1')")
        return value

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, raw: object) -> object:
        """Fill the metric settings the YAML leaves out with the model kind's defaults."""
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            return raw
        try:
            kind = Kind(raw["model"].get("kind", Kind.BINARY))
        except ValueError:
            return raw  # the field's own validation names the allowed kinds
        raw = dict(raw)
        for section, defaults in (
            ("retraining", {"metric": PRIMARY[kind], "realised_floor": DEFAULT_REALISED_FLOOR[kind]}),
            ("promotion", {"metric": PRIMARY[kind], "floors": DEFAULT_FLOORS[kind]}),
        ):
            given = raw.get(section)
            if given is None or isinstance(given, dict):
                raw[section] = {**defaults, **(given or {})}
        return raw

    @model_validator(mode="after")
    def _kind_metrics(self) -> PipelineConfig:
        kind = self.model.kind
        known = METRICS[kind]
        named = {
            "retraining.metric": [self.retraining.metric],
            "promotion.metric": [self.promotion.metric],
            "promotion.floors": list(self.promotion.floors),
        }
        wrong = [f"{key}: {name!r}" for key, names in named.items() for name in names if name not in known]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} are not {kind} metrics; a {kind} model is judged by {sorted(known)}")
        bounds = {f"promotion.floors.{k}": (k, v) for k, v in self.promotion.floors.items()}
        if self.retraining.realised_floor is not None:
            bounds["retraining.realised_floor"] = (self.retraining.metric, self.retraining.realised_floor)
        outside = [
            f"{key} {value}" for key, (name, value) in bounds.items() if known[name].bounded and not 0 <= value <= 1
        ]
        if outside:
            raise ValueError(f"{', '.join(outside)}: these metrics lie between 0 and 1")
        return self

    @property
    def schedule(self) -> str:
        """The cron of the nightly run: one tick per partition."""
        return CADENCES.get(self.cadence, self.cadence)

    @model_validator(mode="after")
    def _columns(self) -> PipelineConfig:
        if not self.features.all:
            raise ValueError("features: name at least one numeric or categorical feature")
        names = [self.id_column, self.target, *self.features.all]
        if self.timestamp_column:
            names.append(self.timestamp_column)
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns listed twice across id_column/target/features: {duplicated}")
        return self

    @model_validator(mode="after")
    def _segment_columns(self) -> PipelineConfig:
        unknown = sorted(set(self.monitoring.segments) - set(self.features.all))
        if unknown:
            raise ValueError(f"monitoring.segments names columns that are not features: {unknown}")
        if len(set(self.monitoring.segments)) < len(self.monitoring.segments):
            raise ValueError("monitoring.segments names a column twice")
        return self

    @model_validator(mode="after")
    def _drift_columns(self) -> PipelineConfig:
        drift = self.monitoring.drift
        unknown = sorted(set(drift.per_column) - {*self.features.all, "score"})
        if unknown:
            raise ValueError(f"monitoring.drift.per_column names columns that are not features or 'score': {unknown}")
        outputs = sorted({"score", "prediction"} & set(self.features.all) | ({"score"} & {self.id_column, self.target}))
        if outputs:
            raise ValueError(f"{outputs}: 'score' and 'prediction' name the model's outputs; rename these columns")
        methods = dict.fromkeys([*self.features.numeric, "score"], (drift.numeric_method, NUMERIC_METHODS))
        methods["score"] = (drift.score_method, NUMERIC_METHODS)
        methods |= dict.fromkeys(self.features.categorical, (drift.categorical_method, CATEGORICAL_METHODS))
        for column, test in drift.per_column.items():
            methods[column] = (test.method, methods[column][1])
        wrong = sorted(f"{c} ({m})" for c, (m, allowed) in methods.items() if m not in allowed)
        if wrong:
            raise ValueError(
                f"drift methods that do not apply to these columns: {wrong}; numeric columns take "
                f"{sorted(NUMERIC_METHODS)}, categorical ones {sorted(CATEGORICAL_METHODS)}"
            )
        return self

    @property
    def retry_after_partitions(self) -> int:
        """Partitions the labelled window must move after a candidate did not help (retraining.retry_after_partitions)."""
        return self.retraining.retry_after_partitions or max(1, self.training.window_partitions // 2)

    @property
    def retrain_asset_name(self) -> str:
        """The Airflow Asset whose events ask `retrain_model` to retrain this model."""
        return f"retrain_request__{self.model.registered_name}"

    @property
    def work_root(self) -> Path:
        """The local folder of what this machine builds: reports, quarantine records, the model cache, SQLite.

        With the data root on an object store, what it holds is published to the report store (by default the
        data root's own bucket and prefix), so no two machines need to share it.
        """
        if self.work_dir is not None:
            return self.work_dir
        if isinstance(self.data_root, Path):
            return self.data_root
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "nightly-ml" / self.data_root.bucket / self.data_root.key

    @property
    def audit_log_file(self) -> Path:
        """Where releases before the audit log moved into the history database kept it (moved in on first use)."""
        return self.work_root / MONITORING / "model_audit.jsonl"

    @property
    def history_url(self) -> str:
        return self.monitoring.history_url or f"sqlite:///{self.work_root / MONITORING / 'history.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.mlflow.store_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow.store_dir / "artifacts"


def config_path(environ: Mapping[str, str]) -> Path:
    """Return the config file named by PIPELINE_CONFIG, or the default one."""
    return Path(environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG)


def _format_errors(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and nesting)"
        lines.append(f"  {key}: {message}")
    return redact(f"invalid pipeline config {path}:\n" + "\n".join(lines))


def _has(raw: dict, path: tuple[str, ...]) -> bool:
    node: object = raw
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return isinstance(node, dict) and path[-1] in node


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """Load and validate the pipeline YAML; relative paths resolve against the file's folder.

    Without a path, PIPELINE_CONFIG names the file, else the default config is used.
    $PIPELINE_MLFLOW_TRACKING_URI overrides `mlflow.tracking_uri` and $PIPELINE_HISTORY_URL
    `monitoring.history_url` (database URLs may hold a password, which never belongs in the YAML),
    $PIPELINE_REPORT_STORE `monitoring.report_store`, $PIPELINE_DATA_ROOT `data_root`;
    $AIRFLOW_VAR_PIPELINE_AUDIT_KEY keys the audit log's hashes. With the data root on an object store and no
    report store named, reports are published under the data root's own URL.
    """
    environ = os.environ if environ is None else environ
    file = Path(path) if path is not None else config_path(environ)
    if file.is_dir():
        raise ConfigError(
            f"{file} is a folder of model configs: name one model's file (for example {file}/<model>.yaml)"
        )
    if not file.is_file():
        raise ConfigError(f"pipeline config {file} does not exist: set {CONFIG_ENV_VAR} to your YAML file")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(redact(f"pipeline config {file} is not valid YAML: {exc}")) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"pipeline config {file} must be a mapping of keys to values")
    renamed = [
        f"  {'.'.join(path)}: renamed to {new} (every window now counts partitions, see docs/configuration.md)"
        for path, new in RENAMED_KEYS.items()
        if _has(raw, path)
    ]
    if renamed:
        raise ConfigError(f"invalid pipeline config {file}:\n" + "\n".join(renamed))
    if "audit_key" in raw:
        raise ConfigError(
            f"invalid pipeline config {file}:\n  audit_key: a secret never goes in the YAML; set {AUDIT_KEY_ENV_VAR}"
        )
    if environ.get(DATA_ROOT_ENV_VAR):
        raw["data_root"] = environ[DATA_ROOT_ENV_VAR]
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, file)) from exc
    base = file.resolve().parent
    mlflow = config.mlflow.model_copy(
        update={
            "store_dir": (base / config.mlflow.store_dir).resolve(),
            "tracking_uri": environ.get(TRACKING_URI_ENV_VAR) or config.mlflow.tracking_uri,
        }
    )
    monitoring = config.monitoring.model_copy(
        update={
            "history_url": environ.get(HISTORY_URL_ENV_VAR) or config.monitoring.history_url,
            "report_store": environ.get(REPORT_STORE_ENV_VAR)
            or config.monitoring.report_store
            or (str(config.data_root) if isinstance(config.data_root, LakePath) else None),
        }
    )
    if monitoring.report_store:
        parse_store_url(monitoring.report_store)  # the environment's value is checked as the YAML's is
    loaded = config.model_copy(
        update={
            "data_root": config.data_root
            if isinstance(config.data_root, LakePath)
            else (base / config.data_root).resolve(),
            "work_dir": (base / config.work_dir).resolve() if config.work_dir else None,
            "mlflow": mlflow,
            "monitoring": monitoring,
            "audit_key": environ.get(AUDIT_KEY_ENV_VAR) or None,
        }
    )
    return loaded


_DAG_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """One model of the deployment: its config file, the suffix of its DAG ids, and its config or why it is broken."""

    file: Path
    suffix: str  # "" for a single config file (DAG ids as they always were); "__<file stem>" in a folder
    config: PipelineConfig | None = None
    error: str | None = None

    def dag_id(self, base: str) -> str:
        return f"{base}{self.suffix}"


def model_sources(environ: Mapping[str, str] | None = None) -> list[ModelSource]:
    """The deployment's models: PIPELINE_CONFIG's file, or one per `*.yaml` in the folder it names.

    A single file that does not load raises (as it always did). In a folder, a file that does not load, whose name
    cannot name a DAG, or whose registered_name or data_root another file already uses, is returned with its error,
    so it breaks only its own DAGs; the others load as usual.
    """
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    if not path.is_dir():
        return [ModelSource(path, "", load_config(path, environ))]
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and p.name[0] != ".")
    if not files:
        raise ConfigError(f"{CONFIG_ENV_VAR} names the folder {path}, which holds no *.yaml model config")
    sources: list[ModelSource] = []
    names: dict[str, Path] = {}
    roots: dict[str, Path] = {}
    for file in files:
        suffix = f"__{file.stem}"
        if not _DAG_SAFE.match(file.stem):
            sources.append(
                ModelSource(file, suffix, error=f"{file.name}: a model's file name may hold only A-Z a-z 0-9 _ . -")
            )
            continue
        try:
            config = load_config(file, environ)
        except ConfigError as exc:
            sources.append(ModelSource(file, suffix, error=str(exc)))
            continue
        name, root = config.model.registered_name, str(config.data_root)
        if name in names or root in roots:
            other = names.get(name) or roots[root]
            clash = f"model.registered_name {name!r}" if name in names else f"data_root {root}"
            sources.append(
                ModelSource(
                    file,
                    suffix,
                    error=f"{file.name}: {clash} is already used by {other.name}; each model needs its own",
                )
            )
            continue
        names[name], roots[root] = file, file
        sources.append(ModelSource(file, suffix, config.model_copy(update={"page_key": file.stem})))
    return sources


# which model each generated DAG belongs to (filled when a DAG file is parsed, in every process that runs it)
_DAG_CONFIGS: dict[str, ModelSource] = {}


def bind_dag(dag_id: str, source: ModelSource) -> None:
    """Record that the DAG `dag_id` runs the model of `source` (its tasks and callbacks load that config)."""
    _DAG_CONFIGS[dag_id] = source


def config_for_dag(dag_id: str, environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """The config of the model a DAG runs, read afresh: the file it was built from, else the single config."""
    source = _DAG_CONFIGS.get(dag_id)
    if source is None:
        return load_config(None, environ)
    return load_config(source.file, environ).model_copy(update={"page_key": source.suffix.removeprefix("__")})
