"""Scoring: stream a partition through the champion and write `predictions/ds=...` atomically."""

from __future__ import annotations

import hashlib
import logging
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import ModelRef, RowSlice, ScoringSummary, Shard, ShardScored
from pipelines.core.errors import PartitionSchemaError, PipelineError, StoreMissingError
from pipelines.core.kinds import Kind
from pipelines.core.paths import PREDICTIONS, PREDICTIONS_FILE, SHARDS, DataPath, data_path, remove_tree
from pipelines.core.threads import return_freed_memory, thread_cap
from pipelines.core.timing import stage
from pipelines.governance.registry import REFERENCE_ARTIFACT, Registry
from pipelines.steps import compiled
from pipelines.steps.predictions import Outputs, concat, predict
from pipelines.storage.atomic import partition_write_lock, publish, temp_path_beside
from pipelines.storage.parquet import parquet_file, parquet_writer, read_metadata, read_schema
from pipelines.storage.partitions import partition_dir, partition_row_count
from pipelines.storage.schema import PartitionSchema, file_batches, incoming_partition, iter_batches

log = logging.getLogger(__name__)


def prediction_schema(id_type: pa.DataType, kind: Kind = Kind.BINARY, classes: list[str] | None = None) -> pa.Schema:
    """Return the predictions contract of a model kind for an id column of the given type.

    binary: `score` (positive-class probability) and `prediction` 0/1; multiclass: `prediction` (the class, as
    text), `score` (its probability) and `probabilities` (a struct, one field per class); regression: `prediction`
    and `score` (the predicted value). Then the lineage columns, the same for every kind.
    """
    kind = Kind(kind)
    if kind is Kind.MULTICLASS:
        outputs = [
            ("score", pa.float64()),
            ("prediction", pa.string()),
            ("probabilities", pa.struct([(c, pa.float64()) for c in classes or []])),
        ]
    elif kind is Kind.REGRESSION:
        outputs = [("score", pa.float64()), ("prediction", pa.float64())]
    else:
        outputs = [("score", pa.float64()), ("prediction", pa.int8())]
    return pa.schema(
        [
            ("id", id_type),
            *outputs,
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
    model: Any,
    batch: pa.RecordBatch,
    chunk_rows: int,
    fast: compiled.CompiledModel | None = None,
    kind: Kind = Kind.BINARY,
    threshold: float = 0.5,
    classes: list[str] | None = None,
) -> tuple[Outputs, np.ndarray]:
    """Return the model's outputs for a batch and which rows the compiled model scored (all False without one)."""
    if fast is not None:
        encoded = fast.encoder.encode(batch) if fast.encoder else model[:-1].transform(batch.to_pandas())
        scores, by_compiled = fast.predict_routed(encoded)
        if Kind(kind) is Kind.REGRESSION:
            return Outputs(scores, scores), by_compiled
        return Outputs(scores, (scores >= threshold).astype("int8")), by_compiled
    frame = batch.to_pandas()
    parts = [
        predict(model, frame.iloc[i : i + chunk_rows], kind, threshold, classes)
        for i in range(0, len(frame), chunk_rows)
    ]
    outputs = concat(parts)
    return outputs, np.zeros(len(outputs), bool)


def scoring_engine(
    config: PipelineConfig, models: Registry, ref: ModelRef, model: Any
) -> tuple[compiled.CompiledModel | None, str]:
    """Return (the verified compiled model, "") or (None, why scikit-learn scores), as `scoring.engine` says.

    `auto` uses the compiled library when it verifies and falls back to scikit-learn with the reason; `compiled`
    refuses to score without it; `sklearn` never looks for it.
    """
    if not compiled.compilable(config):
        return None, compiled.not_compilable_reason(config)
    if config.scoring.engine == "sklearn":
        return None, "scoring.engine is sklearn"
    try:
        folder = models.cached_artifact(ref, compiled.ARTIFACT)
        # the check reads the reference's first rows only (verification_rows' base): bounded at any width
        first = next(parquet_file(models.cached_artifact(ref, REFERENCE_ARTIFACT)).iter_batches(batch_size=2_000), None)
        reference = first.to_pandas() if first is not None else pd.DataFrame(columns=config.features.all)
        fast, reason = compiled.load_verified(model, folder, reference, config.features.all, config.scoring.threads)
        return_freed_memory()  # the check rows' copies, before the partition streams
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


def score_partition(
    config: PipelineConfig,
    ds: str,
    model_ref: ModelRef,
    airflow_run_id: str,
    shards: list[ShardScored] | None = None,
) -> ScoringSummary:
    """Score `incoming/ds=<ds>` with a pinned model version and atomically replace `predictions/ds=<ds>`.

    The version is the champion validation checked the night against (never an alias that can move during
    the run), so one partition is never scored by two versions. Two runs of one night wait for each other
    (a partition lock), and what a killed run left behind is removed first. With `shards` (what `score_shard`
    wrote for every shard of `plan_shards`), the partition is committed from them instead: all shards or none.
    """
    if shards:
        return _commit_shards(config, ds, model_ref, airflow_run_id, shards)
    started = time.monotonic()
    ref = model_ref
    with stage(log, f"load model version {ref.version}"):
        model, fast, reason = _load_scorer(config, ref)
    loaded = time.monotonic()
    partition = _incoming(config, ds)
    total = partition_row_count(list(partition.files))
    target = partition_dir(config.data_root, PREDICTIONS, ds) / PREDICTIONS_FILE
    engine = "compiled" if fast else "sklearn"
    log.info("scoring %s rows of ds=%s with %s version %s (%s)", f"{total:,}", ds, ref.name, ref.version, engine)
    with partition_write_lock(target.parent):
        score_sum, positives, compiled_rows = _write_predictions(
            config,
            model,
            fast,
            ref,
            partition,
            iter_batches(partition, config.scoring.batch_rows),
            total,
            target,
            airflow_run_id,
        )
    summary = _summary(
        ds,
        ref,
        total,
        target,
        score_sum,
        positives,
        compiled_rows,
        time.monotonic() - started,
        _peak_rss_mb(),
        engine,
        reason,
        load_seconds=loaded - started,
    )
    log.info(
        "wrote %s: %s rows in %.1f s (model load %.1f s, then %s rows/s), peak memory %.0f MB",
        target,
        f"{summary.rows:,}",
        summary.seconds,
        summary.load_seconds,
        f"{summary.rows_per_second:,.0f}",
        summary.peak_rss_mb,
    )
    return summary


def _load_scorer(config: PipelineConfig, ref: ModelRef) -> tuple[Any, compiled.CompiledModel | None, str]:
    """Load a pinned model version and the engine that scores it: (model, the verified compiled model or None, why)."""
    models = Registry.open(config)
    model = models.load_model(ref)
    return (model, *scoring_engine(config, models, ref, model))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(
    ds: str,
    ref: ModelRef,
    total: int,
    target: DataPath,
    score_sum: float,
    positives: float,
    compiled_rows: int,
    seconds: float,
    peak_rss_mb: float,
    engine: str,
    reason: str,
    shards: int = 0,
    load_seconds: float = 0.0,
) -> ScoringSummary:
    """The scoring run's summary; its one throughput figure is rows per second of scoring, after the model load
    (what the progress lines report)."""
    return ScoringSummary(
        ds=ds,
        rows=total,
        model_name=ref.name,
        model_version=ref.version,
        mlflow_run_id=ref.run_id,
        mean_score=score_sum / max(total, 1),
        positive_rate=positives / max(total, 1),
        seconds=seconds,
        load_seconds=load_seconds,
        rows_per_second=total / max(seconds - load_seconds, 1e-9),
        peak_rss_mb=peak_rss_mb,
        path=str(target),
        engine=engine,
        engine_reason=reason,
        engine_rows={"compiled": compiled_rows, "sklearn": total - compiled_rows},
        shards=shards,
    )


def _incoming(config: PipelineConfig, ds: str) -> PartitionSchema:
    try:
        return incoming_partition(config, ds)
    except PartitionSchemaError as exc:
        raise PipelineError(
            f"incoming/ds={ds} does not match the configured columns ({exc}); validation refuses such a partition: "
            "rerun the whole night so it is validated first"
        ) from exc


def plan_shards(config: PipelineConfig, ds: str, model_ref: ModelRef) -> list[Shard]:
    """Split a partition above `scoring.shard_rows` rows into at most `scoring.max_shards` shards of row slices.

    Returns [] for a partition that one task scores. Shards follow the files' row groups and split a row group
    only when one is larger than a shard, so each shard reads little more than its own rows.
    """
    partition = _incoming(config, ds)
    footers = {file.name: read_metadata(file) for file in partition.files}
    groups = [
        (name, group, footer.row_group(group).num_rows)
        for name, footer in footers.items()
        for group in range(footer.num_row_groups)
    ]
    total = sum(rows for *_, rows in groups)
    if total <= config.scoring.shard_rows:
        return []
    count = min(config.scoring.max_shards, -(-total // config.scoring.shard_rows))
    bounds = [round(total * k / count) for k in range(count + 1)]  # shard k holds rows [bounds[k], bounds[k+1])
    slices: list[list[RowSlice]] = [[] for _ in range(count)]
    offset = 0
    for name, group, rows in groups:
        for k in range(count):
            start, stop = max(bounds[k], offset), min(bounds[k + 1], offset + rows)
            if start < stop:
                slices[k].append(RowSlice(file=name, row_group=group, start=start - offset, stop=stop - offset))
        offset += rows
    shards = [
        Shard(ds=ds, model=model_ref, index=k, count=count, rows=bounds[k + 1] - bounds[k], slices=slices[k])
        for k in range(count)
    ]
    log.info("ds=%s: %s rows in %d shards of about %s rows", ds, f"{total:,}", count, f"{total // count:,}")
    return shards


def shard_folder(config: PipelineConfig, ds: str, airflow_run_id: str) -> DataPath:
    """Where the shards of one run are written: hidden (`_shards`) inside predictions/ds=..., one folder per run."""
    run_key = hashlib.sha256(airflow_run_id.encode()).hexdigest()[:16]
    return partition_dir(config.data_root, PREDICTIONS, ds) / SHARDS / run_key


def _shard_batches(partition: PartitionSchema, shard: Shard, batch_rows: int) -> Iterator[pa.RecordBatch]:
    files = {file.name: file for file in partition.files}
    for piece in shard.slices:
        if piece.file not in files:
            raise PipelineError(
                f"file {piece.file} of incoming/ds={shard.ds} is gone since the shards were planned: rerun the night"
            )
        position = 0
        for batch in file_batches(partition, files[piece.file], batch_rows, row_groups=[piece.row_group]):
            start, stop = max(piece.start - position, 0), min(piece.stop - position, batch.num_rows)
            position += batch.num_rows
            if start < stop:
                yield batch.slice(start, stop - start)


def score_shard(config: PipelineConfig, shard: Shard, airflow_run_id: str) -> ShardScored:
    """Score one shard into its own hidden file (atomically: a retried shard replaces its file, never adds one)."""
    started = time.monotonic()
    ref = shard.model
    model, fast, reason = _load_scorer(config, ref)
    loaded = time.monotonic() - started
    partition = _incoming(config, shard.ds)
    # a folder per shard: publishing a file drops the other visible files of its folder
    target = shard_folder(config, shard.ds, airflow_run_id) / f"{shard.index:04d}-of-{shard.count:04d}" / "part.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("scoring shard %d of %d of ds=%s (%s rows)", shard.index + 1, shard.count, shard.ds, f"{shard.rows:,}")
    score_sum, positives, compiled_rows = _write_predictions(
        config,
        model,
        fast,
        ref,
        partition,
        _shard_batches(partition, shard, config.scoring.batch_rows),
        shard.rows,
        target,
        airflow_run_id,
    )
    seconds = time.monotonic() - started
    log.info(
        "shard %d of %d: %s rows in %.2f s (model load %.2f s, scoring %.2f s, %s rows/s)",
        shard.index + 1,
        shard.count,
        f"{shard.rows:,}",
        seconds,
        loaded,
        seconds - loaded,
        f"{shard.rows / max(seconds - loaded, 1e-9):,.0f}",
    )
    return ShardScored(
        ds=shard.ds,
        index=shard.index,
        count=shard.count,
        rows=shard.rows,
        path=str(target),
        score_sum=score_sum,
        positives=positives,
        compiled_rows=compiled_rows,
        engine="compiled" if fast else "sklearn",
        engine_reason=reason,
        seconds=seconds,
        load_seconds=loaded,
        peak_rss_mb=_peak_rss_mb(),
    )


def _commit_shards(
    config: PipelineConfig, ds: str, ref: ModelRef, airflow_run_id: str, shards: list[ShardScored]
) -> ScoringSummary:
    """Publish the partition from every shard's file at once, or refuse and leave the published one as it was."""
    started = time.monotonic()
    shards = sorted(shards, key=lambda s: s.index)
    count = shards[0].count
    if [s.index for s in shards] != list(range(count)) or any(s.count != count for s in shards):
        raise PipelineError(
            f"ds={ds}: shards {[s.index for s in shards]} of {count} were scored; every shard must succeed before the "
            "partition is committed (clear the failed score_shard task)"
        )
    total = partition_row_count(list(_incoming(config, ds).files))
    if sum(s.rows for s in shards) != total:
        raise PipelineError(
            f"ds={ds}: the shards hold {sum(s.rows for s in shards):,} rows but the partition has {total:,}: "
            "it changed after it was planned; rerun the night"
        )
    target = partition_dir(config.data_root, PREDICTIONS, ds) / PREDICTIONS_FILE
    with partition_write_lock(target.parent):
        temp = temp_path_beside(target)
        try:
            with parquet_writer(temp, read_schema(data_path(shards[0].path))) as writer:
                for shard in shards:
                    part = parquet_file(data_path(shard.path))
                    if part.metadata.num_rows != shard.rows:
                        raise PipelineError(f"ds={ds}: shard file {shard.path} does not hold its {shard.rows:,} rows")
                    for group in range(part.metadata.num_row_groups):
                        writer.write_table(part.read_row_group(group))
            publish(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        remove_tree(target.parent / SHARDS)  # this run's shards and any a killed run left
    engines = {s.engine for s in shards}
    summary = _summary(
        ds,
        ref,
        total,
        target,
        sum(s.score_sum for s in shards),
        sum(s.positives for s in shards),
        sum(s.compiled_rows for s in shards),
        max(s.seconds for s in shards) + time.monotonic() - started,  # the shards ran side by side
        max(s.peak_rss_mb for s in shards),
        "compiled" if engines == {"compiled"} else "sklearn",
        "; ".join(sorted({s.engine_reason for s in shards if s.engine_reason})),
        shards=count,
    )
    log.info("committed %s from %d shards: %s", target, count, summary)
    return summary


def models_classes(config: PipelineConfig, ref: ModelRef) -> list[str]:
    """The classes of a multiclass model version, in its probability order (from its model card)."""
    classes = Registry.open(config).model_card(ref).classes
    if not classes:
        raise PipelineError(f"{ref.name} v{ref.version} records no classes: it was not trained as a multiclass model")
    return classes


def _output_columns(outputs: Outputs, schema: pa.Schema) -> list[pa.Array]:
    """The kind's output columns (score, prediction and, multiclass, the probabilities) in the schema's types."""
    columns: list[pa.Array] = [
        pa.array(outputs.score, pa.float64()),
        pa.array(outputs.prediction, schema.field("prediction").type),
    ]
    if outputs.probabilities is not None:
        struct = schema.field("probabilities").type
        fields = [pa.array(outputs.probabilities[:, i], pa.float64()) for i in range(outputs.probabilities.shape[1])]
        columns.append(pa.StructArray.from_arrays(fields, fields=list(struct)))
    return columns


def _write_predictions(
    config: PipelineConfig,
    model: Any,
    fast: compiled.CompiledModel | None,
    ref: ModelRef,
    partition: PartitionSchema,
    batches: Iterator[pa.RecordBatch],
    total: int,
    target: DataPath,
    airflow_run_id: str,
) -> tuple[float, float, int]:
    """Stream `batches` of the partition through the model into a hidden file, then publish it.

    Returns the score sum, the positives and the rows the compiled model scored.
    """
    temp = temp_path_beside(target)
    scored_at = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    kind, threshold = config.model.kind, config.model.decision_threshold
    classes = models_classes(config, ref) if kind is Kind.MULTICLASS else None
    schema = prediction_schema(partition.schema.field(config.id_column).type, kind, classes)
    progress = _Progress(total, config.scoring.progress_every_seconds)
    score_sum = positives = 0.0
    compiled_rows = 0
    spent = dict.fromkeys(("read", "predict", "write"), 0.0)  # where the time goes, for the task log
    try:
        clock = time.perf_counter()
        with parquet_writer(temp, schema) as writer, thread_cap(config.scoring.threads, "scoring"):
            for batch in batches:
                now = time.perf_counter()
                spent["read"] += now - clock
                outputs, by_compiled = predict_scores(
                    model, batch, config.scoring.predict_chunk_rows, fast, kind, threshold, classes
                )
                scores = outputs.score
                clock, now = now, time.perf_counter()
                spent["predict"] += now - clock
                rows = len(scores)
                writer.write_table(
                    pa.table(
                        [
                            batch.column(config.id_column),
                            *_output_columns(outputs, schema),
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
                predicted = outputs.prediction if kind is Kind.BINARY else np.zeros(0)
                score_sum += float(scores.sum())
                positives += float(predicted.sum())
                compiled_rows += int(by_compiled.sum())
                progress.add(rows)
                clock = time.perf_counter()
                spent["write"] += clock - now
            now = time.perf_counter()
        if progress.done != total:
            raise RuntimeError(f"scored {progress.done} rows but the partition footers say {total}")
        publish(temp, target)
        spent["write"] += time.perf_counter() - now  # the writer's close (the footer, the upload's end) and publish
        log.info(
            "%s rows to %s: reading %.2f s, predicting %.2f s, writing and publishing %.2f s",
            f"{total:,}",
            target,
            spent["read"],
            spent["predict"],
            spent["write"],
        )
    except PartitionSchemaError as exc:
        raise PipelineError(
            f"{target.parent.name} of incoming changed after it was validated ({exc}): rerun the whole night"
        ) from exc
    finally:
        temp.unlink(missing_ok=True)
    return score_sum, positives, compiled_rows
