"""The nightly flow around scoring: validate against the champion, monitor the scored night, decide on retraining."""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.cadence import shift
from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import (
    AuditAction,
    AuditEntry,
    Decision,
    Episode,
    LabelledNight,
    ModelRef,
    NightRecord,
    NightSummary,
    Rule,
    ScoringSummary,
    ValidatedPartition,
)
from pipelines.core.errors import PartitionQuarantinedError
from pipelines.core.kinds import ESTIMATED, Kind
from pipelines.core.paths import INCOMING, QUARANTINE, QUARANTINE_RECORD, REPORTS, SUMMARY_FILE, DataPath, data_path
from pipelines.core.threads import thread_cap
from pipelines.core.timing import stage
from pipelines.flows.external import adopt_external_champion
from pipelines.flows.retraining import drift_onset, training_readiness
from pipelines.governance import audit
from pipelines.governance.baseline import rebaseline
from pipelines.governance.registry import HOLDOUT_ARTIFACT, REFERENCE_ARTIFACT, Registry
from pipelines.steps import segments
from pipelines.steps.decision import decide
from pipelines.steps.drift import current_sample, drift_report, summary_report
from pipelines.steps.episodes import after_rebaseline, plan
from pipelines.steps.performance import Estimator, multiclass_estimate_from_sums, multiclass_sums
from pipelines.steps.predictions import Outputs
from pipelines.steps.reports import validation_page
from pipelines.steps.validation import validate_against_profile
from pipelines.storage import history, report_store
from pipelines.storage.atomic import partition_write_lock, replace_folder, write_atomic, write_json_atomic
from pipelines.storage.episodes import change_open, open_episode
from pipelines.storage.parquet import parquet_file, read_parquet
from pipelines.storage.partitions import list_partitions, partition_dir
from pipelines.storage.schema import check_feature_kinds, incoming_partition

log = logging.getLogger(__name__)


def validate_partition(
    config: PipelineConfig, ds: str, airflow_run_id: str, accepted_by: str | None = None
) -> ValidatedPartition:
    """Validate a partition against the champion's training profile; return it with the champion it is scored by.

    A refused partition is also recorded in the monitoring history before the error propagates. `accepted_by`
    names the operator who accepted a quarantined night (its failures become warnings, see
    `validation.validate_against_profile`).
    """
    started = time.monotonic()
    check_feature_kinds(config)
    models = Registry.open(config)
    ref = models.champion()
    if config.model.external:
        adopt_external_champion(config, models, ref, airflow_run_id)
    try:
        outcome = validate_against_profile(config, ds, models.load_profile(ref), accepted_by)
    except PartitionQuarantinedError as exc:
        record_quarantine(config, ds, ref, exc.failures, exc.rows, airflow_run_id)
        raise
    if outcome.accepted and accepted_by:
        record_acceptance(config, ds, ref, outcome.accepted, accepted_by, airflow_run_id)
    return ValidatedPartition(
        ds=ds,
        model=ref,
        rows=outcome.rows,
        expectations=outcome.evaluated,
        warnings=outcome.warnings,
        warned_columns=outcome.warned_columns,
        seconds=time.monotonic() - started,
    )


def record_acceptance(
    config: PipelineConfig, ds: str, ref: ModelRef, failures: list[str], accepted_by: str, run_id: str
) -> None:
    """Audit an operator's acceptance of a quarantined night: who, which night, which failures (kept whatever a rerun
    of the night later writes to the history)."""
    with audit.audit_lock(config):
        audit.append(
            config,
            AuditEntry(
                action=AuditAction.ACCEPT_QUARANTINE,
                model=ref.name,
                to_version=ref.version,
                reason=f"ds={ds} scored although it failed validation: " + "; ".join(failures),
                approved_by=accepted_by,
                airflow_run_id=run_id,
            ),
        )


def record_quarantine(
    config: PipelineConfig, ds: str, ref: ModelRef, failures: list[str], rows: int, run_id: str
) -> None:
    """Record a refused night in the history so the UI and the decision see it."""
    history.record_night(
        config,
        NightRecord(
            ds=ds,
            model_name=ref.name,
            model_version=ref.version,
            rows=rows,
            validation_success=False,
            validation_failures=failures,
            reports={"quarantine_json": str(partition_dir(config.work_root, QUARANTINE, ds) / QUARANTINE_RECORD)},
            airflow_run_id=run_id,
        ),
    )


def monitor_night(
    config: PipelineConfig, validated: ValidatedPartition, scored: ScoringSummary, airflow_run_id: str
) -> NightSummary:
    """Write the night's drift and data-summary reports, estimate its performance, and record it in the history.

    The validation and scoring steps' durations go to the history with this one's.
    """
    started = time.monotonic()
    ds, ref, predictions = scored.ds, scored.ref, data_path(scored.path)
    models = Registry.open(config)
    with stage(log, "load the champion's reference"):
        reference = pd.read_parquet(models.cached_artifact(ref, REFERENCE_ARTIFACT))
        holdout = pd.read_parquet(models.cached_artifact(ref, HOLDOUT_ARTIFACT))
        thresholds = models.drift_thresholds(ref)
    with stage(log, "sample the night"):
        sample = current_sample(config, ds, incoming_partition(config, ds), predictions)
    folder = partition_dir(config.work_root, REPORTS, ds)
    with stage(log, "estimate performance"):
        estimate = estimate_night(config, models, ref, holdout, predictions, sample)
    by_segment = None
    if config.monitoring.segments:
        with stage(log, "segments"):
            by_segment = night_segments(config, models, ref, sample, reference, holdout)
    built: dict[str, Any] = {}

    def build(staging: Path) -> None:
        with stage(log, "drift report"):
            drift, written = drift_report(config, sample, reference, staging, thresholds, ds=ds)
        with stage(log, "data summary report"):
            written |= summary_report(config, sample, reference, staging, drift.reported)
        write_atomic(
            staging / "validation.html", lambda temp: temp.write_text(validation_page(validated), encoding="utf-8")
        )
        written["validation_html"] = str(staging / "validation.html")
        shifted = sorted(set(drift.drifted_columns) | set(validated.warned_columns))
        summary = NightSummary(
            ds=ds,
            model_version=ref.version,
            airflow_run_id=airflow_run_id,
            rows=scored.rows,
            drift_share=len(shifted) / len(config.features.all),
            drifted_columns=drift.drifted_columns,
            warned_columns=validated.warned_columns,
            validation_warnings=validated.warnings,
            score_drifted=drift.score_drifted,
            estimated_roc_auc=_finite(estimate.get("roc_auc", float("nan"))),
            estimated_accuracy=_finite(estimate.get("accuracy", float("nan"))),
            reports={key: str(folder / Path(path).name) for key, path in written.items()},
            estimated_metrics={k: v for k, v in estimate.items() if _finite(v) is not None},
        )
        # every column's statistics are in drift_columns.json; the summary keeps the reported ones (bounded)
        kept = drift.as_dict() | {"columns": {c: drift.columns[c] for c in drift.reported}}
        write_json_atomic(staging / SUMMARY_FILE, summary.model_dump(mode="json") | {"drift": kept})
        built.update(summary=summary, drift=drift)

    # the night's reports are built aside and swapped in whole: a killed run never leaves a mix of two runs
    with partition_write_lock(folder.parent), thread_cap(config.monitoring.threads, "monitoring"):
        replace_folder(folder, build)
    with stage(log, "publish the reports"):
        report_store.publish(config, folder)
    summary, drift = built["summary"], built["drift"]
    history.record_night(
        config,
        NightRecord.of_night(
            summary,
            scored,
            ref.name,
            drift_stats={c: drift.columns[c] for c in drift.reported},
            estimated_roc_auc=_finite(estimate.get("roc_auc", float("nan"))),
            estimated_accuracy=_finite(estimate.get("accuracy", float("nan"))),
            estimated_metrics={k: v for k, v in estimate.items() if _finite(v) is not None},
            metric=config.retraining.metric,
            estimated_metric=_finite(estimate.get(config.retraining.metric, float("nan"))),
            reports=summary.reports | {"summary_json": str(folder / SUMMARY_FILE)},
            segment_estimates=by_segment,
            task_seconds={
                "validate_partition": validated.seconds,
                "score_partition": scored.seconds,
                "monitor_night": time.monotonic() - started,
            },
        ),
    )
    log.info(
        "night %s monitored in %.1f s: drift share %.2f (%d drifted column(s)), reports in %s",
        ds,
        time.monotonic() - started,
        summary.drift_share,
        len(summary.drifted_columns),
        folder,
    )
    with stage(log, "expire old reports"):
        expire_reports(config, ds)
    return summary


def expire_reports(config: PipelineConfig, ds: str) -> list[str]:
    """Remove the HTML reports of nights older than monitoring.keep_reports_partitions partitions before `ds`.

    On disk and in the report store; the JSON summaries, the history and the audit stay, and the history row's
    `reports` says when they expired (the page shows "expired"). Returns the nights expired now.
    """
    keep = config.monitoring.keep_reports_partitions
    if keep is None:
        return []
    cutoff = shift(config, date.fromisoformat(ds), -keep).isoformat()
    due = [
        r
        for r in history.reports_before(config, cutoff)
        if isinstance(r["reports"], dict) and "expired_at" not in r["reports"]
    ]
    expired = []
    for night in sorted({r["ds"] for r in due}):
        folder = partition_dir(config.work_root, REPORTS, night)
        if folder.is_dir():
            with partition_write_lock(folder.parent):
                for page in folder.glob("*.html"):
                    page.unlink()
        report_store.prune(config, folder, lambda name: name.endswith(".html"))
        for row in (r for r in due if r["ds"] == night):
            kept = {k: v for k, v in row["reports"].items() if not str(v).endswith(".html")}
            history.update_night(
                config,
                NightRecord(
                    ds=night,
                    model_name=row["model_name"],
                    model_version=str(row["model_version"]),
                    reports=kept | {"expired_at": ds},
                ),
            )
        expired.append(night)
    if expired:
        log.info(
            "reports of %d night(s) older than %d partitions expired (HTML removed, summaries kept): %s",
            len(expired),
            keep,
            ", ".join(expired),
        )
    return expired


def estimate_night(
    config: PipelineConfig,
    models: Registry,
    ref: ModelRef,
    holdout: pd.DataFrame,
    predictions: DataPath,
    sample: pd.DataFrame,
) -> dict[str, float]:
    """The night's performance estimated before labels: CBPE (binary, multiclass) or direct loss estimation.

    Binary reads the night's scores; multiclass adds up CBPE's expected counts batch by batch; regression
    estimates on the night's sample (features and predictions). NaN where it cannot be estimated.
    """
    kind = config.model.kind
    classes = models.model_card(ref).classes if kind is Kind.MULTICLASS else []
    if holdout.empty or ("label" in holdout and holdout["label"].isna().all()):
        return dict.fromkeys(ESTIMATED[kind], float("nan"))
    estimator = Estimator(kind, holdout, config.features.all, classes)
    if kind is Kind.BINARY:
        scores = read_parquet(predictions, columns=["score"]).column(0).to_numpy()
        return estimator.estimate(Outputs(scores, scores), None, config.model.decision_threshold)
    if kind is Kind.REGRESSION:
        return estimator.estimate(
            Outputs(sample["score"].to_numpy(float), sample["score"].to_numpy(float)), sample, 0.5
        )
    sums = None
    for batch in parquet_file(predictions).iter_batches(batch_size=65_536, columns=["probabilities"]):
        struct = batch.column(0)
        proba = np.column_stack([struct.field(i).to_numpy(zero_copy_only=False) for i in range(len(classes))])
        part = multiclass_sums(proba, estimator.calibrators)
        sums = part if sums is None else sums + part
    return multiclass_estimate_from_sums(sums) if sums is not None else dict.fromkeys(ESTIMATED[kind], float("nan"))


def night_segments(
    config: PipelineConfig,
    models: Registry,
    ref: ModelRef,
    sample: pd.DataFrame,
    reference: pd.DataFrame,
    holdout: pd.DataFrame,
) -> dict[str, Any]:
    """The night's segments (monitoring.segments): share, score drift and estimate each, and the worst ones."""
    kind, card = config.model.kind, models.model_card(ref)
    classes = card.classes if kind is Kind.MULTICLASS else []
    kept = segments.kept_values(config, reference)
    baseline = segments.references(config, holdout, kept, classes, card.metrics.get(config.retraining.metric))
    usable = not holdout.empty and "label" in holdout and not holdout["label"].isna().all()
    estimator = Estimator(kind, holdout, config.features.all, classes) if usable else None
    facts = segments.estimated_segments(config, sample, reference, estimator, kept, baseline)
    return {"segments": facts, "worst": segments.worst(config, facts)}


def _finite(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def decide_retraining(
    config: PipelineConfig,
    night: NightSummary,
    evaluated: list[LabelledNight],
    force: bool,
    acknowledged_by: str | None = None,
    airflow_run_id: str = "",
) -> Decision:
    """Decide after a monitored night: which retraining rules fire, and what the model's episode does about them.

    The rules read the champion's history, which tonight's `evaluated` labels have just updated. One episode per
    problem (`steps.episodes.plan`): its first night opens it and alerts once; the retraining request goes out once,
    when a run can train. `acknowledged_by`: an operator acknowledged the drift up to tonight (`acknowledge_drift`),
    so the drift rule does not count tonight. The decision, its reasons and what the night did are recorded.
    """
    started = time.monotonic()
    ds, version = night.ds, night.model_version
    models = Registry.open(config)
    ref = models.version(version)
    card = models.model_card(ref)
    trained_until = date.fromisoformat(card.holdout_days[-1]) if card.holdout_days else None
    if evaluated:
        log.info("labels evaluated tonight: %s", ", ".join(f"{e.ds} (v{e.model_version})" for e in evaluated))
    if acknowledged_by:
        acknowledge_drift(config, models, ref, ds, acknowledged_by, airflow_run_id)
    fired = decide(
        config, history.read_history(config), ds, version, card.metrics, trained_until, force, card.metric_noise
    )
    if acknowledged_by:
        kept = [(r, why) for r, why in zip(fired.rules, fired.reasons) if r != Rule.DRIFT]
        fired = fired.model_copy(
            update={"retrain": bool(kept), "rules": [r for r, _ in kept], "reasons": [w for _, w in kept]}
        )
    onset = drift_onset(config, models) if Rule.DRIFT in fired.rules else None
    hold = rolled_back(config, version)
    planned: dict[str, Decision] = {}

    def step(episode: Episode | None) -> Episode | None:
        changed, planned["decision"] = plan(
            config,
            episode,
            fired,
            lambda rules: training_readiness(config, rules),
            onset.isoformat() if onset else None,
            hold,
        )
        return changed

    stored = change_open(config, step)
    result = planned["decision"].model_copy(update={"episode": stored})
    history.update_night(
        config,
        NightRecord(
            ds=ds,
            model_name=config.model.registered_name,
            model_version=version,
            decision="retrain" if result.retrain else "keep",
            decision_reasons=result.reasons,
            episode_id=stored.id if stored else None,
            request_outcome=result.outcome[:500],
        ),
    )
    history.merge_task_seconds(
        config, ds, config.model.registered_name, version, {"decide_retraining": time.monotonic() - started}
    )
    for reason in result.reasons:
        log.warning("retrain rule fired for %s: %s", ds, reason)
    if not result.retrain:
        log.info("no retrain rule fired for %s: the champion v%s holds", ds, version)
    log.info("%s", result.outcome)
    return result


def rolled_back(config: PipelineConfig, version: str) -> str | None:
    """Why retraining is not requested automatically for `version`: an operator rolled the champion back to it.

    The rollback answered the last episode (its promotion was undone on purpose): retraining again at once would
    retrain what was rolled back. Until the next promotion, a rule that fires opens an episode and alerts, and a
    request goes out only on force_retrain. None otherwise.
    """
    last = audit.expected_champion(audit.read_audit(config))
    if last is None or last.action not in (AuditAction.ROLLBACK, AuditAction.RESTORE) or last.to_version != version:
        return None
    return (
        f"the champion v{version} was set by a {last.action} ({last.approved_by}, {last.at[:10]}): retraining is not "
        "requested automatically; trigger batch_scoring with force_retrain, or run retrain_model, to retrain"
    )


def acknowledge_drift(
    config: PipelineConfig, models: Registry, ref: ModelRef, ds: str, by: str, airflow_run_id: str
) -> AuditEntry:
    """An operator acknowledges the drift up to `ds` as the new normal: rebaseline the champion (audited).

    The recent window is the open episode's days since its onset (else the last drift_consecutive_nights
    partitions), scored ones only, at most training.window_partitions. A drift-only episode closes.
    """
    episode = open_episode(config)
    night = date.fromisoformat(ds)
    start = (
        date.fromisoformat(episode.onset)
        if episode and episode.onset
        else shift(config, night, -(config.retraining.drift_consecutive_nights - 1))
    )
    refused = history.quarantined_nights(config)
    days = [
        d for d in list_partitions(config.data_root, INCOMING) if start <= d <= night and d.isoformat() not in refused
    ][-config.training.window_partitions :]
    entry = rebaseline(
        config,
        models,
        ref,
        days,
        f"drift up to ds={ds} acknowledged by an operator (acknowledge_drift)",
        by,
        airflow_run_id,
    )
    change_open(
        config,
        lambda ep: after_rebaseline(ep, "", ds, by) if ep is not None and set(ep.rules) <= {Rule.DRIFT} else None,
    )
    return entry
