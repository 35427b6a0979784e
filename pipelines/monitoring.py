"""The nightly monitoring steps: reports and estimates of a scored night, late labels, and the decision."""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipelines import history, registry
from pipelines.cadence import shift
from pipelines.config import PipelineConfig
from pipelines.decision import Decision, decide
from pipelines.drift import current_sample, drift_report, save_snapshot, summary_report
from pipelines.errors import PartitionQuarantinedError, PipelineError
from pipelines.labels import match_labels, read_labels
from pipelines.lake import (
    LABELS,
    PREDICTIONS,
    REPORTS,
    data_files,
    list_partitions,
    partition_dir,
    partition_write_lock,
    replace_folder,
    write_atomic,
    write_json_atomic,
)
from pipelines.performance import estimated_performance, fit_calibrator, realised_performance
from pipelines.schema import incoming_partition
from pipelines.validation import validate_partition

log = logging.getLogger(__name__)


def model_artifact(config: PipelineConfig, ref: registry.ModelRef, name: str) -> Path:
    """Return the local path of an artifact stored with a model version (reference sample, held-out scores).

    Downloaded once into `<data_root>/monitoring/models/<run id>/` (a version's artifacts never change);
    the download goes to a hidden folder first, so a killed download is never mistaken for the artifact.
    """
    target = config.data_root / "monitoring" / "models" / ref.run_id / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            os.replace(registry.download_artifact(config, ref, name, Path(tmp)), target)
    return target


def drift_thresholds(config: PipelineConfig, ref: registry.ModelRef) -> dict[str, dict[str, Any]] | None:
    """Return the drift thresholds calibrated when the model was registered (None for a model registered before them)."""
    try:
        return json.loads(model_artifact(config, ref, registry.DRIFT_THRESHOLDS_ARTIFACT).read_text())
    except (PipelineError, OSError) as exc:
        log.warning("model v%s has no calibrated drift thresholds (%s): using the configured ones", ref.version, exc)
        return None


def validation_page(ds: str, validated: dict[str, Any]) -> str:
    """Return the night's data-quality findings as a small HTML page (every value escaped)."""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in validated.get("warnings") or [])
    body = f"<ul>{items}</ul>" if items else "<p>Every check passed.</p>"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>Validation {html.escape(ds)}</title></head>'
        f"<body style=\"font-family:sans-serif\"><h1>Validation of ds={html.escape(ds)}</h1>"
        f"<p>{validated.get('rows', 0):,} rows, {validated.get('expectations', 0)} expectations. Data-quality warnings "
        "(checks set to <code>warn</code> in validation.severity, or a night an operator accepted): the night was scored, "
        f"and the warned columns count as drifted in the drift share.</p>{body}</body></html>"
    )


def monitor_night(
    config: PipelineConfig, ds: str, scored: dict[str, Any], airflow_run_id: str, validated: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the night's drift and data-summary reports, estimate its performance, and record it in the history.

    `validated` and `scored` are the validation and scoring tasks' summaries; their durations go to the history.
    """
    started = time.monotonic()
    ref = registry.ModelRef(scored["model_name"], scored["model_version"], scored["mlflow_run_id"])
    predictions = partition_dir(config.data_root, PREDICTIONS, ds) / "predictions.parquet"
    reference = pd.read_parquet(model_artifact(config, ref, registry.REFERENCE_ARTIFACT))
    sample = current_sample(config, ds, incoming_partition(config, ds), predictions)
    folder = partition_dir(config.data_root, REPORTS, ds)
    holdout = pd.read_parquet(model_artifact(config, ref, registry.HOLDOUT_ARTIFACT))
    thresholds = drift_thresholds(config, ref)
    validated = validated or {}
    warned = validated.get("warned_columns") or []  # feature columns only (validation.describe_results)
    calibrator = fit_calibrator(holdout["score"].to_numpy(), holdout["label"].to_numpy())
    scores = pq.read_table(predictions, columns=["score"]).column(0).to_numpy()
    estimate = estimated_performance(scores, config.model.decision_threshold, calibrator)
    built: dict[str, Any] = {}

    def build(staging: Path) -> None:
        drift, written = drift_report(config, sample, reference, staging, thresholds)
        written |= summary_report(config, sample, reference, staging)
        write_atomic(staging / "validation.html", lambda temp: temp.write_text(validation_page(ds, validated), encoding="utf-8"))
        written["validation_html"] = str(staging / "validation.html")
        paths = {key: str(folder / Path(path).name) for key, path in written.items()}
        shifted = sorted(set(drift.drifted_columns) | set(warned))
        summary = {
            "ds": ds,
            "model_version": ref.version,
            "airflow_run_id": airflow_run_id,
            "rows": scored["rows"],
            "drift_share": len(shifted) / len(config.features.all),
            "drifted_columns": drift.drifted_columns,
            "warned_columns": warned,
            "validation_warnings": validated.get("warnings") or [],
            "score_drifted": drift.score_drifted,
            "estimated_roc_auc": estimate["roc_auc"],
            "estimated_accuracy": estimate["accuracy"],
            "reports": paths,
        }
        write_json_atomic(staging / "summary.json", summary | {"drift": drift.as_dict()})
        built.update(drift=drift, paths=paths, summary=summary)

    # the night's reports are built aside and swapped in whole: a killed run never leaves a mix of two runs
    with partition_write_lock(folder.parent):
        replace_folder(folder, build)
    drift, paths, summary = built["drift"], built["paths"], built["summary"]
    history.record_night(
        config, ds, ref.name, ref.version,
        rows=scored["rows"], validation_success=True, validation_failures=[],
        validation_warnings=summary["validation_warnings"],
        drift_share=summary["drift_share"], drifted_columns=drift.drifted_columns, score_drifted=drift.score_drifted,
        drift_stats=drift.columns, estimated_roc_auc=estimate["roc_auc"], estimated_accuracy=estimate["accuracy"],
        reports=paths | {"summary_json": str(folder / "summary.json")},
        scoring_rows_per_s=scored["rows_per_second"], scoring_peak_rss_mb=scored["peak_rss_mb"],
        task_seconds={
            **({"validate_partition": validated["seconds"]} if validated and "seconds" in validated else {}),
            "score_partition": scored["seconds"],
            "monitor_night": time.monotonic() - started,
        },
        airflow_run_id=airflow_run_id,
    )
    log.info("night %s monitored: %s", ds, summary)
    return summary


def validate_against_champion(
    config: PipelineConfig, ds: str, airflow_run_id: str, accepted_by: str | None = None
) -> dict[str, Any]:
    """Validate a partition against the champion's training profile; return a small summary for XCom.

    A refused partition is also recorded in the monitoring history before the error propagates. `accepted_by`
    names the operator who accepted a quarantined night (its failures become warnings, see `validate_partition`).
    """
    started = time.monotonic()
    ref = registry.champion(config)
    try:
        outcome = validate_partition(config, ds, registry.load_profile(config, ref), accepted_by)
    except PartitionQuarantinedError as exc:
        record_quarantine(config, ds, ref, exc.failures, exc.rows, airflow_run_id)
        raise
    return {
        "ds": ds,
        "rows": outcome.rows,
        "expectations": outcome.evaluated,
        "success": outcome.success,
        "warnings": outcome.warnings,
        "warned_columns": outcome.warned_columns,
        "seconds": time.monotonic() - started,
    }


def record_quarantine(config: PipelineConfig, ds: str, ref: registry.ModelRef, failures: list[str], rows: int, run_id: str) -> None:
    """Record a refused night in the history so the UI and the decision see it."""
    history.record_night(
        config, ds, ref.name, ref.version, rows=rows, validation_success=False, validation_failures=failures,
        reports={"quarantine_json": str(partition_dir(config.data_root, "quarantine", ds) / "validation.json")},
        airflow_run_id=run_id,
    )


def performance_report(config: PipelineConfig, joined: pd.DataFrame, folder: Path, stem: str = "performance") -> dict[str, str]:
    """Write Evidently's classification report of scores (`score`) against labels (`target`); return its paths."""
    os.environ["DO_NOT_TRACK"] = "1"
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas="score", pos_label=1)],
        numerical_columns=["score"],
    )
    frame = joined[["target", "score"]].astype({"target": "int64"})
    snapshot = Report([ClassificationPreset(probas_threshold=config.model.decision_threshold)]).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None
    )
    return save_snapshot(snapshot, folder, stem)


def evaluate_labelled_nights(config: PipelineConfig) -> list[dict[str, Any]]:
    """Compute realised performance for every scored night whose labels arrived or changed since it was last evaluated.

    Labels are matched to scored ids by value (coverage = matched ids / scored ids); duplicates,
    conflicts and unreadable files are reported in the log and the history, and one night's bad labels
    never stop the other nights (nor the night's decision).
    """
    done = []
    overdue = overdue_labels(config)
    if overdue:
        log.warning(
            "labels are overdue for %d scored night(s) (due %d partition(s) later, label_delay_partitions): %s; their "
            "realised metrics wait for them", len(overdue), config.label_delay_partitions,
            ", ".join(d.isoformat() for d in overdue[-10:]),
        )
    for day in list_partitions(config.data_root, LABELS):
        ds = day.isoformat()
        predictions_files = data_files(partition_dir(config.data_root, PREDICTIONS, ds))
        if not predictions_files:
            continue
        # decide from the footers and one row, so nights already evaluated cost no data reads
        reader = pq.ParquetFile(predictions_files[0])
        if reader.metadata.num_row_groups == 0:
            continue
        first = reader.read_row_group(0, columns=["model_name", "model_version"])
        name, version = first.column(0)[0].as_py(), first.column(1)[0].as_py()
        entry = history.night(config, ds, name, version)
        if entry is None:
            continue
        try:
            result = _evaluate_night(config, ds, name, version, entry, predictions_files[0])
        except (PipelineError, OSError, ValueError) as exc:
            log.error("labels of %s could not be evaluated (%s: %s); the other nights go on", ds, type(exc).__name__, exc)
            continue
        if result is not None:
            done.append(result)
    return done


def overdue_labels(config: PipelineConfig) -> list[date]:
    """Return the scored nights whose labels should exist by now (label_delay_partitions after them) but do not."""
    scored = list_partitions(config.data_root, PREDICTIONS)
    if not scored:
        return []
    labelled = set(list_partitions(config.data_root, LABELS))
    return [d for d in scored if d not in labelled and shift(config, d, config.label_delay_partitions) <= scored[-1]]


def _evaluate_night(
    config: PipelineConfig, ds: str, name: str, version: str, entry: dict[str, Any], predictions_file: Path
) -> dict[str, Any] | None:
    labels = read_labels(config, ds)
    if ((entry["realised_metrics"] or {}).get("labels") or {}).get("fingerprint") == labels.fingerprint:
        return None
    matched = match_labels(pd.read_parquet(predictions_file, columns=["id", "score"]), labels)
    facts = matched.summary(labels)
    if matched.joined["target"].nunique() < 2:
        log.warning("labels of %s: %d matched ids hold fewer than two classes; realised metrics wait for more labels",
                    ds, matched.matched_ids)
        history.update_night(config, ds, name, version, label_coverage=matched.coverage, realised_metrics={"labels": facts})
        return None
    joined = matched.joined
    metrics = realised_performance(joined["target"].to_numpy(), joined["score"].to_numpy(), config.model.decision_threshold)
    metrics["labelled_rows"] = int(len(joined))
    metrics["labels"] = facts
    folder = partition_dir(config.data_root, REPORTS, ds)
    with partition_write_lock(folder.parent):
        paths = performance_report(config, joined, folder)
    history.update_night(
        config, ds, name, version, realised_metrics=metrics, realised_roc_auc=metrics["roc_auc"],
        realised_accuracy=metrics["accuracy"], label_coverage=matched.coverage, reports={**(entry["reports"] or {}), **paths},
    )
    log.info("realised performance of %s (v%s, %.0f%% of scored ids labelled): roc_auc %.3f",
             ds, version, 100 * matched.coverage, metrics["roc_auc"])
    return {"ds": ds, "model_version": version, "label_coverage": matched.coverage, "roc_auc": metrics["roc_auc"],
            "label_issues": matched.issues}


def _champion_facts(config: PipelineConfig, version: str) -> tuple[dict[str, float], date | None]:
    mlflow_client = registry.client(config)
    mv = mlflow_client.get_model_version(config.model.registered_name, version)
    run = mlflow_client.get_run(mv.run_id)
    metrics = {k.removeprefix("holdout_"): v for k, v in run.data.metrics.items() if k.startswith("holdout_")}
    holdout_days = (mv.tags.get("training.holdout_days") or "").split(",")
    return metrics, date.fromisoformat(holdout_days[-1]) if holdout_days[-1] else None


def decide_night(config: PipelineConfig, ds: str, model_version: str, force: bool) -> dict[str, Any]:
    """Decide whether to retrain after `ds`, record the decision and its reasons in the history, and return it."""
    started = time.monotonic()
    metrics, trained_until = _champion_facts(config, model_version)
    result: Decision = decide(config, history.read_history(config), ds, model_version, metrics, trained_until, force)
    history.update_night(
        config, ds, config.model.registered_name, model_version,
        decision="retrain" if result.retrain else "keep", decision_reasons=result.reasons,
    )
    history.merge_task_seconds(
        config, ds, config.model.registered_name, model_version, {"decide_retraining": time.monotonic() - started}
    )
    for reason in result.reasons:
        log.warning("retrain rule fired for %s: %s", ds, reason)
    if not result.retrain:
        log.info("no retrain rule fired for %s: the champion v%s holds", ds, model_version)
    return result.as_dict() | {"ds": ds, "model_version": model_version}


def history_table(config: PipelineConfig) -> list[dict[str, Any]]:
    """Return the history as printable rows (for the demo and the CLI)."""
    frame = history.read_history(config)
    rows = []
    for r in frame.itertuples():
        rows.append({
            "ds": r.ds, "model": r.model_version, "valid": "yes" if r.validation_success else "NO",
            "drift share": "-" if pd.isna(r.drift_share) else f"{r.drift_share:.2f}",
            "drifted": ",".join(r.drifted_columns or [])[:40] or "-",
            "est auc": "-" if pd.isna(r.estimated_roc_auc) else f"{r.estimated_roc_auc:.3f}",
            "real auc": "-" if pd.isna(r.realised_roc_auc) else f"{r.realised_roc_auc:.3f}",
            "labels": "-" if pd.isna(r.label_coverage) else f"{100 * r.label_coverage:.0f}%",
            "decision": r.decision or "-",
        })
    return rows

