"""Models trained elsewhere: adopt the version the champion alias points at, and build what monitoring needs.

With `model.external`, whoever registers the model moves the `champion` alias (MLflow UI, a notebook, another
pipeline). The first night that sees a version the audit log does not vouch for records an audited `adopt` move
(who moved it is not known here; the entry says so), and builds the version's monitoring reference from the
partitions `model.reference` names: the validation profile, the drift reference sample with the model's own
outputs, calibrated drift thresholds, and (from the labelled partitions among them) the held-out rows CBPE and
direct loss estimation are fitted on and the baseline metrics the retraining rules compare against. They are
logged as a run of this product's experiment and tagged on the version; the user's run is never written to.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Alias, AuditAction, AuditEntry, ModelCard, ModelRef
from pipelines.core.errors import PipelineError
from pipelines.core.kinds import Kind
from pipelines.core.paths import INCOMING, LABELS
from pipelines.governance import audit
from pipelines.governance.registry import (
    DRIFT_THRESHOLDS_ARTIFACT,
    HOLDOUT_ARTIFACT,
    LINEAGE_ARTIFACT,
    PROFILE_ARTIFACT,
    REFERENCE_ARTIFACT,
    Registry,
)
from pipelines.steps.drift import calibrate_thresholds, reference_rows, sample_rows
from pipelines.steps.performance import kind_metrics
from pipelines.steps.predictions import model_classes, predict
from pipelines.steps.profile import data_profile
from pipelines.steps.training import champion_noise, load_labelled
from pipelines.storage.atomic import write_json_atomic
from pipelines.storage.partitions import list_partitions, partition_digest, partition_files
from pipelines.storage.schema import incoming_partition

log = logging.getLogger(__name__)


def adopt_external_champion(config: PipelineConfig, models: Registry, ref: ModelRef, run_id: str) -> None:
    """Audit a champion alias moved outside this product, and build the version's monitoring reference once."""
    with audit.audit_lock(config):
        last = audit.expected_champion(audit.read_audit(config))
        if last is None or last.to_version != ref.version:
            audit.append(
                config,
                AuditEntry(
                    action=AuditAction.ADOPT,
                    model=ref.name,
                    from_version=last.to_version if last else None,
                    to_version=ref.version,
                    reason="the champion alias of an external model (model.external) was moved outside this product",
                    approved_by="unknown (moved in the MLflow registry)",
                    airflow_run_id=run_id,
                ),
            )
            if last is not None:  # rollback_model returns to it, as after a promotion
                models.set_alias(Alias.PREVIOUS, models.version(last.to_version))
            log.warning("adopted external %s v%s as champion (audited)", ref.name, ref.version)
    if models.reference_run(ref) is None:
        build_reference(config, models, ref)


def build_reference(config: PipelineConfig, models: Registry, ref: ModelRef) -> str:
    """Build and log an external version's monitoring reference from `model.reference`; return the run id."""
    assert config.model.reference is not None  # the config requires it for an external model
    first, last = config.model.reference.first, config.model.reference.last
    days = [d for d in list_partitions(config.data_root, INCOMING) if first <= d <= last]
    if not days:
        raise PipelineError(
            f"model.reference names {first} .. {last}, but incoming/ holds no partition in that range: name the "
            "partitions the external model should be monitored against"
        )
    kind, features, threshold = config.model.kind, config.features.all, config.model.decision_threshold
    model = models.load_model(ref)
    per_day = max(1, reference_rows(config) // len(days))
    frames = [sample_rows(incoming_partition(config, d.isoformat()), per_day, seed=d.toordinal()) for d in days]
    reference = pd.concat(frames, ignore_index=True)[features]
    classes = model_classes(model) if kind is Kind.MULTICLASS else []
    outputs = predict(model, reference, kind, threshold, classes or None)
    reference = reference.assign(score=outputs.score)
    if kind is Kind.MULTICLASS:
        reference = reference.assign(prediction=outputs.prediction)
    if kind is Kind.MULTICLASS and not classes:
        raise PipelineError(
            f"external {ref.name} v{ref.version} does not name its classes (classes_): cannot monitor it"
        )
    labelled = [d for d in days if partition_files(config.data_root, LABELS, d)]
    rows_per_partition = max(1, len(reference) // len(days))
    holdout, metrics, noise = _labelled_reference(config, model, labelled, classes, rows_per_partition)
    card = ModelCard(
        partitions={
            d.isoformat(): partition_digest(list(incoming_partition(config, d.isoformat()).files)) for d in days
        },
        holdout_days=[d.isoformat() for d in labelled],
        metrics=metrics,
        lineage={"reason": f"external model; monitoring reference {first} .. {last}"},
        kind=str(kind),
        classes=classes,
        external=True,
        metric_noise=noise,
    )
    thresholds = calibrate_thresholds(config, reference, rows_per_partition, seed=config.training.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_json_atomic(folder / PROFILE_ARTIFACT, data_profile(reference, config))
        write_json_atomic(folder / LINEAGE_ARTIFACT, card.model_dump(mode="json"))
        write_json_atomic(folder / DRIFT_THRESHOLDS_ARTIFACT, thresholds)
        reference.to_parquet(folder / REFERENCE_ARTIFACT, index=False)
        holdout.to_parquet(folder / HOLDOUT_ARTIFACT, index=False)
        run = models.log_reference(ref, folder, f"monitoring reference {first} .. {last}")
    log.info(
        "built the monitoring reference of external %s v%s from %d partitions (%d labelled): %s rows, metrics %s",
        ref.name,
        ref.version,
        len(days),
        len(labelled),
        f"{len(reference):,}",
        metrics,
    )
    return run


def _labelled_reference(
    config: PipelineConfig, model: object, days: list[date], classes: list[str], rows_per_partition: int
) -> tuple[pd.DataFrame, dict[str, float], dict[str, float]]:
    """The labelled reference rows in the held-out layout estimation is fitted on, and the model's metrics there."""
    from pipelines.governance.gate import labels_of

    kind, features, threshold = config.model.kind, config.features.all, config.model.decision_threshold
    empty = pd.DataFrame({"score": [], "label": [], "ds": []})
    if not days:
        log.warning("no partition of model.reference is labelled: estimates and baseline metrics wait for labels")
        return empty, {}, {}
    frame, _ = load_labelled(config, days)
    y, frame = labels_of(config, frame)
    if len(frame) > reference_rows(config):
        keep = frame.sample(n=reference_rows(config), random_state=0).index
        y, frame = y[frame.index.get_indexer(keep)], frame.loc[keep]
    outputs = predict(model, frame[features], kind, threshold, classes or None)
    metrics = kind_metrics(kind, y, outputs, threshold, classes)
    holdout = pd.DataFrame({"score": outputs.score, "label": y, "ds": frame["ds"].to_numpy()})
    if kind is Kind.MULTICLASS and outputs.probabilities is not None:
        holdout = holdout.assign(**{f"proba_{i}": outputs.probabilities[:, i] for i in range(len(classes))})
    if kind is Kind.REGRESSION:
        holdout = pd.concat([holdout, frame[features].reset_index(drop=True)], axis=1)
    return holdout, metrics, champion_noise(config, y, outputs, classes, rows_per_partition)
