"""Late labels: realised performance of every scored night whose labels arrived (or changed) since it was last seen."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.cadence import shift
from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import LabelledNight, NightRecord
from pipelines.core.errors import PipelineError
from pipelines.core.kinds import Kind
from pipelines.core.paths import LABELS, PREDICTIONS, REPORTS, DataPath
from pipelines.governance.registry import HOLDOUT_ARTIFACT, REFERENCE_ARTIFACT, Registry
from pipelines.steps import segments
from pipelines.steps.labels import id_key, match_labels, read_labels
from pipelines.steps.performance import performance_report_by_kind, realised_by_kind
from pipelines.steps.predictions import Outputs
from pipelines.storage import history, report_store
from pipelines.storage.atomic import partition_write_lock
from pipelines.storage.parquet import parquet_file, read_parquet
from pipelines.storage.partitions import data_files, list_partitions, partition_dir
from pipelines.storage.schema import incoming_partition, read_table

log = logging.getLogger(__name__)


def evaluate_labels(config: PipelineConfig) -> list[LabelledNight]:
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
            "realised metrics wait for them",
            len(overdue),
            config.label_delay_partitions,
            ", ".join(d.isoformat() for d in overdue[-10:]),
        )
    for day in list_partitions(config.data_root, LABELS):
        ds = day.isoformat()
        predictions_files = data_files(partition_dir(config.data_root, PREDICTIONS, ds))
        if not predictions_files:
            continue
        # decide from the footers and one row, so nights already evaluated cost no data reads
        reader = parquet_file(predictions_files[0])
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
            log.error(
                "labels of %s could not be evaluated (%s: %s); the other nights go on", ds, type(exc).__name__, exc
            )
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
    config: PipelineConfig, ds: str, name: str, version: str, entry: dict[str, Any], predictions_file: DataPath
) -> LabelledNight | None:
    kind = config.model.kind
    classes = Registry.open(config).model_card_of(name, version).classes if kind is Kind.MULTICLASS else []
    labels = read_labels(config, ds, classes)
    if ((entry["realised_metrics"] or {}).get("labels") or {}).get("fingerprint") == labels.fingerprint:
        return None
    columns = ["id", "score", "prediction"] + (["probabilities"] if kind is Kind.MULTICLASS else [])
    matched = match_labels(_read_predictions(predictions_file, columns), labels)
    facts = matched.summary(labels)
    joined = matched.joined
    too_few = joined["target"].nunique() < 2 if kind.classifies else len(joined) < 2
    if too_few:
        log.warning(
            "labels of %s: %d matched ids hold fewer than two %s; realised metrics wait for more labels",
            ds,
            matched.matched_ids,
            "classes" if kind.classifies else "rows",
        )
        history.update_night(
            config,
            NightRecord(
                ds=ds,
                model_name=name,
                model_version=version,
                label_coverage=matched.coverage,
                realised_metrics={"labels": facts},
            ),
        )
        return None
    outputs = Outputs(
        joined["score"].to_numpy(float),
        joined["prediction"].to_numpy(),
        joined[[f"proba_{i}" for i in range(len(classes))]].to_numpy(float) if kind is Kind.MULTICLASS else None,
    )
    threshold = config.model.decision_threshold
    metrics = realised_by_kind(kind, joined["target"].to_numpy(), outputs, threshold, classes)
    metrics["labelled_rows"] = int(len(joined))
    metrics["labels"] = facts
    metrics["interval"] = realised_interval(config, joined["target"].to_numpy(), outputs, classes)
    by_segment = (
        labelled_segments(config, ds, version, joined, outputs, classes) if config.monitoring.segments else None
    )
    folder = partition_dir(config.work_root, REPORTS, ds)
    with partition_write_lock(folder.parent):
        paths = performance_report_by_kind(kind, joined, threshold, folder, target=config.target)
    # beside the night's other reports, wherever they were built
    report_store.publish(config, folder, names=[Path(p).name for p in paths.values()])
    chosen = config.retraining.metric
    value = metrics.get(chosen)
    history.update_night(
        config,
        NightRecord(
            ds=ds,
            model_name=name,
            model_version=version,
            realised_metrics=metrics,
            realised_roc_auc=metrics.get("roc_auc"),
            realised_accuracy=metrics.get("accuracy"),
            metric=chosen,
            realised_metric=value,
            label_coverage=matched.coverage,
            reports={**(entry["reports"] or {}), **paths},
            segment_realised=by_segment,
        ),
    )
    log.info(
        "realised performance of %s (v%s, %.0f%% of scored ids labelled): %s %s",
        ds,
        version,
        100 * matched.coverage,
        chosen,
        "n/a" if value is None else f"{value:.4g}",
    )
    return LabelledNight(
        ds=ds,
        model_version=version,
        label_coverage=matched.coverage,
        roc_auc=metrics.get("roc_auc"),
        label_issues=matched.issues,
        metric=chosen,
        value=value,
    )


INTERVAL_ROWS = 20_000  # the realised metric's interval is bootstrapped on at most this many labelled rows


def realised_interval(config: PipelineConfig, y: Any, outputs: Outputs, classes: list[str]) -> dict[str, Any]:
    """The realised primary metric's 95% bootstrap interval (on an even sample of at most INTERVAL_ROWS rows)."""
    rows = np.arange(len(y))
    if len(rows) > INTERVAL_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, INTERVAL_ROWS, replace=False))
    name = config.retraining.metric
    _, low, high = segments.metric_interval(
        config.model.kind, name, np.asarray(y)[rows], outputs.take(rows), config.model.decision_threshold, classes
    )
    return {"metric": name, "low": None if np.isnan(low) else low, "high": None if np.isnan(high) else high}


def labelled_segments(
    config: PipelineConfig, ds: str, version: str, joined: pd.DataFrame, outputs: Outputs, classes: list[str]
) -> dict[str, Any]:
    """A labelled night's realised metric per segment (with intervals) and its worst segments.

    The segment columns are read from the night's incoming partition (its ids and those columns only) and joined
    to the labelled predictions by id; the segments and their references are the night's model's.
    """
    models = Registry.open(config)
    ref = models.version(version)
    columns = [config.id_column, *config.monitoring.segments]
    values = read_table(incoming_partition(config, ds).project(columns)).to_pandas()
    values = values.assign(_key=id_key(values[config.id_column])).drop_duplicates("_key")
    keyed = joined.assign(_key=id_key(joined["id"])).merge(
        values.drop(columns=[config.id_column]), on="_key", how="left"
    )
    reference = pd.read_parquet(models.cached_artifact(ref, REFERENCE_ARTIFACT), columns=config.monitoring.segments)
    holdout = pd.read_parquet(models.cached_artifact(ref, HOLDOUT_ARTIFACT))
    kept = segments.kept_values(config, reference)
    overall = models.model_card(ref).metrics.get(config.retraining.metric)
    baseline = segments.references(config, holdout, kept, classes, overall)
    y = keyed["target"].to_numpy()
    facts = segments.realised_segments(config, keyed, y, outputs, kept, baseline, classes)
    ranked = segments.worst(config, facts)
    if ranked:
        log.info(
            "segments of %s furthest below their reference: %s",
            ds,
            "; ".join(f"{r['segment']} {r['value']:.3f} (reference {r['reference']:.3f})" for r in ranked[:3]),
        )
    return {"segments": facts, "worst": ranked}


def _read_predictions(file: DataPath, columns: list[str]) -> pd.DataFrame:
    """The predictions' columns as a frame; a multiclass night's probabilities become proba_0, proba_1, ..."""
    table = read_parquet(file, columns=columns)
    frame = table.drop_columns(["probabilities"]).to_pandas() if "probabilities" in columns else table.to_pandas()
    if "probabilities" in columns:
        struct = table.column("probabilities").combine_chunks()
        for i in range(struct.type.num_fields):
            frame[f"proba_{i}"] = struct.field(i).to_numpy(zero_copy_only=False)
    return frame
