"""Scoring: stream a partition through the champion and write `predictions/ds=...` atomically."""

from __future__ import annotations

import logging
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import compiled
from pipelines.config import PipelineConfig
from pipelines.contracts import ModelRef, ScoringSummary
from pipelines.errors import PartitionSchemaError, PipelineError, StoreMissingError
from pipelines.lake import (
    PREDICTIONS,
    PREDICTIONS_FILE,
    partition_dir,
    partition_row_count,
    partition_write_lock,
    publish,
    temp_path_beside,
)
from pipelines.registry import REFERENCE_ARTIFACT, Registry
from pipelines.schema import PartitionSchema, incoming_partition, iter_batches
from pipelines.threads import thread_cap

log = logging.getLogger(__name__)


def prediction_schema(id_type: pa.DataType) -> pa.Schema:
    """Return the predictions contract for an id column of the given type."""
    return pa.schema(
        [
            ("id", id_type),
            ("score", pa.float64()),
            ("prediction", pa.int8()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("mlflow_run_id", pa.string()),
            ("scored_at", pa.timestamp("us", tz="UTC")),
            ("airflow_run_id", pa.string()),
            ("scoring_engine", pa.dictionary(pa.int8(), pa.string())),  # which engine scored the row
        ]
    )


ENGINES = pa.array(["sklearn", "compiled"], pa.string())


def predict_scores(
    model: Any, batch: pa.RecordBatch, chunk_rows: int, fast: compiled.CompiledModel | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return positive-class probabilities and which rows the compiled model scored (all False without one)."""
    if fast is not None:
        encoded = fast.encoder.encode(batch) if fast.encoder else model[:-1].transform(batch.to_pandas())
        return fast.predict_routed(encoded)
    encoded = model[:-1].transform(batch.to_pandas())
    classifier = model[-1]
    parts = [classifier.predict_proba(encoded[i : i + chunk_rows])[:, 1] for i in range(0, len(encoded), chunk_rows)]
    scores = np.concatenate(parts) if parts else np.empty(0)
    return scores, np.zeros(len(scores), bool)


def scoring_engine(
    config: PipelineConfig, models: Registry, ref: ModelRef, model: Any
) -> tuple[compiled.CompiledModel | None, str]:
    """Return (the verified compiled model, "") or (None, why scikit-learn scores), as `scoring.engine` says.

    `auto` uses the compiled library when it verifies and falls back to scikit-learn with the reason; `compiled`
    refuses to score without it; `sklearn` never looks for it.
    """
    if config.scoring.engine == "sklearn":
        return None, "scoring.engine is sklearn"
    try:
        folder = models.cached_artifact(ref, compiled.ARTIFACT)
        reference = pd.read_parquet(models.cached_artifact(ref, REFERENCE_ARTIFACT))
        fast, reason = compiled.load_verified(model, folder, reference, config.features.all, config.scoring.threads)
    except StoreMissingError as exc:
        fast, reason = None, f"version {ref.version} has no compiled library ({str(exc)[:160]})"
    if fast is None and config.scoring.engine == "compiled":
        raise PipelineError(
            f"scoring.engine is compiled, but the compiled model of v{ref.version} cannot be used: {reason}; "
            "set scoring.engine to auto to score with scikit-learn instead"
        )
    if fast is None:
        log.warning("scoring with scikit-learn: %s", reason)
    return fast, reason


class _Progress:
    def __init__(self, total: int, every_seconds: float) -> None:
        self.total, self.every, self.done = total, every_seconds, 0
        self.start = self.last = time.monotonic()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            log.info(
                "scored %s / %s rows (%.0f%%), %s rows/s",
                f"{self.done:,}",
                f"{self.total:,}",
                100 * self.done / max(self.total, 1),
                f"{rate:,.0f}",
            )


def score_partition(config: PipelineConfig, ds: str, model_ref: ModelRef, airflow_run_id: str) -> ScoringSummary:
    """Score `incoming/ds=<ds>` with a pinned model version and atomically replace `predictions/ds=<ds>`.

    The version is the champion validation checked the night against (never an alias that can move during
    the run), so one partition is never scored by two versions. Two runs of one night wait for each other
    (a partition lock), and what a killed run left behind is removed first.
    """
    started = time.monotonic()
    ref = model_ref
    models = Registry.open(config)
    model = models.load_model(ref)
    fast, reason = scoring_engine(config, models, ref, model)
    try:
        partition = incoming_partition(config, ds)
    except PartitionSchemaError as exc:
        raise PipelineError(
            f"incoming/ds={ds} does not match the configured columns ({exc}); validation refuses such a partition: "
            "rerun the whole night so it is validated first"
        ) from exc
    total = partition_row_count(list(partition.files))
    target = partition_dir(config.data_root, PREDICTIONS, ds) / PREDICTIONS_FILE
    engine = "compiled" if fast else "sklearn"
    log.info("scoring %s rows of ds=%s with %s version %s (%s)", f"{total:,}", ds, ref.name, ref.version, engine)
    with partition_write_lock(target.parent):
        score_sum, positives, compiled_rows = _write_predictions(
            config, model, fast, ref, partition, total, target, airflow_run_id
        )
    seconds = time.monotonic() - started
    summary = ScoringSummary(
        ds=ds,
        rows=total,
        model_name=ref.name,
        model_version=ref.version,
        mlflow_run_id=ref.run_id,
        mean_score=score_sum / max(total, 1),
        positive_rate=positives / max(total, 1),
        seconds=seconds,
        rows_per_second=total / max(seconds, 1e-9),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        path=str(target),
        engine=engine,
        engine_reason=reason,
        engine_rows={"compiled": compiled_rows, "sklearn": total - compiled_rows},
    )
    log.info("wrote %s: %s", target, summary)
    return summary


def _write_predictions(
    config: PipelineConfig,
    model: Any,
    fast: compiled.CompiledModel | None,
    ref: ModelRef,
    partition: PartitionSchema,
    total: int,
    target: Path,
    airflow_run_id: str,
) -> tuple[float, float, int]:
    """Stream the partition through the model into a hidden file, then publish it.

    Returns the score sum, the positives and the rows the compiled model scored.
    """
    temp = temp_path_beside(target)
    scored_at = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    schema = prediction_schema(partition.schema.field(config.id_column).type)
    progress = _Progress(total, config.scoring.progress_every_seconds)
    score_sum = positives = 0.0
    compiled_rows = 0
    try:
        with pq.ParquetWriter(temp, schema) as writer, thread_cap(config.scoring.threads, "scoring"):
            for batch in iter_batches(partition, config.scoring.batch_rows):
                scores, by_compiled = predict_scores(model, batch, config.scoring.predict_chunk_rows, fast)
                predicted = (scores >= config.model.decision_threshold).astype("int8")
                rows = len(scores)
                writer.write_table(
                    pa.table(
                        [
                            batch.column(config.id_column),
                            pa.array(scores, pa.float64()),
                            pa.array(predicted, pa.int8()),
                            pa.repeat(pa.scalar(ref.name, pa.string()), rows),
                            pa.repeat(pa.scalar(ref.version, pa.string()), rows),
                            pa.repeat(pa.scalar(ref.run_id, pa.string()), rows),
                            pa.repeat(scored_at, rows),
                            pa.repeat(pa.scalar(airflow_run_id, pa.string()), rows),
                            pa.DictionaryArray.from_arrays(pa.array(by_compiled.astype("int8")), ENGINES),
                        ],
                        schema=schema,
                    )
                )
                score_sum += float(scores.sum())
                positives += float(predicted.sum())
                compiled_rows += int(by_compiled.sum())
                progress.add(rows)
        if progress.done != total:
            raise RuntimeError(f"scored {progress.done} rows but the partition footers say {total}")
        publish(temp, target)
    except PartitionSchemaError as exc:
        raise PipelineError(
            f"{target.parent.name} of incoming changed after it was validated ({exc}): rerun the whole night"
        ) from exc
    finally:
        temp.unlink(missing_ok=True)
    return score_sum, positives, compiled_rows
