"""The MLflow registry: logging candidates with lineage, aliases, and loading models and their artifacts.

One `Registry` per task: `Registry.open(config)` checks the store, points MLflow at it once and keeps one
client; every registry call of that task goes through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Alias, AuditAction, AuditEntry, ModelCard, ModelRef
from pipelines.core.errors import AuditIntegrityError, ChampionMissingError, NoChampionError, StoreMissingError
from pipelines.core.paths import MONITORING
from pipelines.governance import audit
from pipelines.steps import compiled
from pipelines.steps.predictions import predict
from pipelines.storage import history

if TYPE_CHECKING:
    from pipelines.steps.training import TrainedModel

log = logging.getLogger(__name__)

PROFILE_ARTIFACT = "data_profile.json"
REFERENCE_ARTIFACT = "reference_sample.parquet"
HOLDOUT_ARTIFACT = "holdout_scores.parquet"
DRIFT_THRESHOLDS_ARTIFACT = "drift_thresholds.json"  # per-column alarm thresholds calibrated at registration
REFERENCE_RUN_TAG = "nightly_ml.reference_run"  # an external version's monitoring reference: a run of ours
# the artifacts a rebaseline replaces (governance.baseline): served from the run its audited entry names
BASELINE_ARTIFACTS = (REFERENCE_ARTIFACT, DRIFT_THRESHOLDS_ARTIFACT, PROFILE_ARTIFACT)
REJECTED_AT_TAG = "promotion.rejected_at"  # when a candidate was rejected (ISO time): retention counts from it
ARTIFACTS_REMOVED_TAG = "retention.artifacts_removed"  # when retention removed a rejected candidate's artifacts
LINEAGE_ARTIFACT = "training_partitions.json"  # the model card: partitions and digests, days, metrics, why
# Types our own pipeline stores that skops does not trust by default; we only load models we logged.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
T = TypeVar("T")


def _sqlite_file(config: PipelineConfig) -> Path | None:
    uri = config.tracking_uri
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def is_new_deployment(config: PipelineConfig) -> bool:
    """Return whether nothing shows an earlier deployment: no audit entry and no monitored night."""
    return not audit.read_audit(config) and not history.has_nights(config)


class Registry:
    """The configured MLflow store: one client, opened once per task."""

    def __init__(self, config: PipelineConfig, client: Any) -> None:
        self.config, self.client, self.name = config, client, config.model.registered_name
        self._baselines: dict[str, str] | None = None  # version -> the run of its newest rebaseline

    @classmethod
    def open(cls, config: PipelineConfig, create: bool = False) -> Registry:
        """Open the store; a missing SQLite store raises StoreMissingError unless `create` (then it is made).

        MLflow would otherwise create an empty store, and a night scored or a model registered there would
        be lost to the real registry. Only the init-mlflow command, the demo and the first bootstrap of a
        new deployment create one.
        """
        import mlflow
        from mlflow import MlflowClient

        database = _sqlite_file(config)
        if database is not None and not (database.is_file() and database.stat().st_size > 0):
            if not create:
                advice = (
                    "This deployment has no history yet: run the retrain_model DAG (it creates the store and "
                    "bootstraps the first model), or `nightly-ml init-mlflow`"
                    if is_new_deployment(config)
                    else "This deployment has a monitoring history and an audit log, so the store existed: restore it (and "
                    "its artifacts folder) from backup or point the config at it. Do not create a new one: models "
                    "would be registered where the real registry cannot see them (init-mlflow only for a brand-new "
                    "deployment)"
                )
                raise StoreMissingError(
                    f"the MLflow store {database} does not exist (mlflow.store_dir / PIPELINE_MLFLOW_TRACKING_URI): "
                    f"nothing was read or written. {advice}"
                )
            database.parent.mkdir(parents=True, exist_ok=True)
        # mlflow.start_run, log_model and load_model("models:/...") read the process-wide URIs
        mlflow.set_tracking_uri(config.tracking_uri)
        mlflow.set_registry_uri(config.tracking_uri)
        opened = cls(config, MlflowClient(config.tracking_uri, config.tracking_uri))
        if create and opened.client.get_experiment_by_name(config.mlflow.experiment) is None:
            location = config.artifact_root.as_uri() if config.mlflow.tracking_uri is None else None
            opened.client.create_experiment(config.mlflow.experiment, artifact_location=location)
        return opened

    def experiment_id(self) -> str:
        """Return the configured experiment's id; StoreMissingError if the store has no such experiment."""
        experiment = self.client.get_experiment_by_name(self.config.mlflow.experiment)
        if experiment is None:
            raise StoreMissingError(
                f"the MLflow store {self.config.tracking_uri} has no experiment {self.config.mlflow.experiment!r}: it is "
                "not this deployment's store (or was emptied). Restore it from backup or fix mlflow.tracking_uri / "
                "mlflow.experiment"
            )
        return str(experiment.experiment_id)

    # aliases

    def alias_version(self, alias: str) -> ModelRef | None:
        """Return the version an alias points at, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return None
            raise
        return ModelRef(self.name, str(version.version), version.run_id)

    def set_alias(self, alias: str, ref: ModelRef) -> None:
        """Point `alias` at a model version."""
        self.client.set_registered_model_alias(ref.name, alias, ref.version)
        log.info("alias %s of %s now points at version %s", alias, ref.name, ref.version)

    def delete_alias(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.name, alias)

    def version(self, version: str) -> ModelRef:
        """Return a registered version of the configured model (MlflowException if there is none)."""
        found = self.client.get_model_version(self.name, str(version))
        return ModelRef(self.name, str(found.version), found.run_id)

    def tag(self, ref: ModelRef, key: str, value: str) -> None:
        """Set a tag on a model version (shown in MLflow's UI; never read back as data)."""
        self.client.set_model_version_tag(ref.name, ref.version, key, value[:4900])

    def former_champion(self) -> str | None:
        """Return a sentence naming the champion on record (audit log or `previous` alias), or None for a new one."""
        try:
            last = audit.expected_champion(audit.read_audit(self.config))
        except AuditIntegrityError as exc:
            return f"the audit log cannot be verified ({exc})"
        if last is not None:
            return f"the audit log shows v{last.to_version} as champion (last move: {last.action} at {last.at[:19]})"
        previous = self.alias_version(Alias.PREVIOUS)
        if previous is not None:
            return f"the registry's 'previous' alias points at v{previous.version}, a former champion"
        scored = history.scored_versions(self.config)
        if scored:
            return "the monitoring history holds nights scored by " + ", ".join(f"v{v}" for v in scored)
        return None

    def champion(self) -> ModelRef:
        """Return the current champion, pinned to its version; raise NoChampionError when there is none."""
        ref = self.alias_version(Alias.CHAMPION)
        if ref is not None:
            return ref
        on_record = self.former_champion()
        if on_record:
            raise ChampionMissingError(
                f"registered model {self.name!r} has no '{Alias.CHAMPION}' alias in {self.config.tracking_uri}, but "
                f"{on_record}: the alias was deleted or the registry restored from an older copy. Nothing was scored. "
                "Re-establish it with the rollback_model DAG (target_version = the version to restore; it is "
                "audited), or restore the registry from backup"
            )
        refused = self.refused_first_model()
        if refused is not None:
            raise NoChampionError(
                f"registered model {self.name!r} has no '{Alias.CHAMPION}' version: retrain_model trained v{refused.to_version} "
                f"as the first model on {refused.at[:19]}, and it was not made champion ({refused.reason}). Nothing was "
                "scored. Change what the reason names (lower the promotion floor if this is the best the data "
                "allows, or give the training more or better labelled data), then run retrain_model again"
            )
        raise NoChampionError(
            f"registered model {self.name!r} has no '{Alias.CHAMPION}' version in {self.config.tracking_uri} and none is "
            "on record: run the retrain_model DAG (it bootstraps the first model)"
        )

    def refused_first_model(self) -> AuditEntry | None:
        """The audit entry of the newest first model the floors refused (no champion ever existed), or None."""
        try:
            entries = audit.read_audit(self.config)
        except AuditIntegrityError:
            return None
        refused = [e for e in entries if e.action == AuditAction.REJECT and e.gate is not None and e.gate.bootstrap]
        return refused[-1] if refused else None

    def champion_matches(self, last_move: AuditEntry | None) -> bool:
        """Return whether the champion alias is the version an audited move named (both absent counts)."""
        current = self.alias_version(Alias.CHAMPION)
        if last_move is None or current is None:
            return last_move is None and current is None
        return current.version == last_move.to_version

    # models and their artifacts

    def _artifacts(self, ref: ModelRef, what: str, load: Callable[[], T]) -> T:
        """Run `load`; a missing artifact becomes StoreMissingError naming the version and where its files should be."""
        from mlflow.exceptions import MlflowException

        try:
            return load()
        except (MlflowException, OSError) as exc:
            if isinstance(exc, MlflowException) and exc.error_code not in (*_MISSING, "INTERNAL_ERROR"):
                raise
            try:
                location = self.client.get_run(ref.run_id).info.artifact_uri
            except MlflowException:
                location = "unknown"
            raise StoreMissingError(
                f"the {what} of {ref.name} v{ref.version} (run {ref.run_id}) cannot be read from {location} "
                f"({type(exc).__name__}: {str(exc)[:200]}): restore the MLflow artifacts folder "
                f"({self.config.artifact_root}) from backup; retrying cannot help"
            ) from exc

    def load_model(self, ref: ModelRef) -> Any:
        """Load a pinned model version (kept per process: a version never changes).

        Its scikit-learn flavour when it has one (every model this product trains; `predict_proba` included), else
        its pyfunc flavour (an external model).
        """
        return self._artifacts(ref, "model", lambda: _load_model(self.config.tracking_uri, ref))

    def reference_run(self, ref: ModelRef) -> str | None:
        """The run holding an external version's monitoring reference, or None before it was built."""
        return self.client.get_model_version(ref.name, ref.version).tags.get(REFERENCE_RUN_TAG)

    def artifact_ref(self, ref: ModelRef) -> ModelRef:
        """Where a version's pipeline artifacts live: its own run, or (external) the reference run built for it."""
        if not self.config.model.external:
            return ref
        run = self.reference_run(ref)
        if run is None:
            raise StoreMissingError(
                f"external {ref.name} v{ref.version} has no monitoring reference yet: the night's validate_partition "
                "builds it from model.reference (rerun the night)"
            )
        return ModelRef(ref.name, ref.version, run)

    def baseline_run(self, ref: ModelRef) -> str | None:
        """The run holding a version's rebaselined drift reference (its newest audited rebaseline), or None."""
        if self._baselines is None:
            self._baselines = {
                e.to_version: e.note
                for e in audit.read_audit(self.config)
                if e.action == AuditAction.REBASELINE and e.note
            }
        return self._baselines.get(ref.version)

    def log_baseline(self, ref: ModelRef, folder: Path, reason: str) -> str:
        """Log a rebaselined drift reference (`folder`) as a run of ours; the caller audits it (its `note`)."""
        self._baselines = None
        return self._log_run_of_ours(ref, folder, "baseline", reason)

    def _log_run_of_ours(self, ref: ModelRef, folder: Path, what: str, reason: str) -> str:
        """Log `folder` as a run of this product's experiment about version `ref` (`what`: reference, baseline)."""
        import mlflow

        with mlflow.start_run(
            experiment_id=self.experiment_id(), run_name=f"{what} of {ref.name} v{ref.version}"
        ) as run:
            mlflow.set_tags({f"nightly_ml.{what}_of": f"{ref.name}/{ref.version}", "reason": reason})
            mlflow.log_artifacts(str(folder))
        return str(run.info.run_id)

    # rejected candidates

    def rejected_versions(self) -> list[Any]:
        """The registered versions a rejection tagged (MLflow ModelVersion objects), oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((v for v in found if "promotion.rejected" in v.tags), key=lambda v: int(v.version))

    def remove_rejected_artifacts(self, older_than_days: float, now: datetime) -> list[str]:
        """Remove the artifacts (model, reference, run files) of candidates rejected more than `older_than_days` ago.

        The version stays registered with its tags, metrics and audit entry (what was rejected and why stays
        readable); it is tagged with when its files went. Return the versions cleaned now.
        """
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        holders = {v.version for v in (self.alias_version(a) for a in Alias if a != Alias.REFUSED) if v is not None}
        removed = []
        for version in self.rejected_versions():
            when = version.tags.get(REJECTED_AT_TAG)
            if ARTIFACTS_REMOVED_TAG in version.tags or not when or str(version.version) in holders:
                continue
            if (now - datetime.fromisoformat(when)).total_seconds() < older_than_days * 86_400:
                continue
            locations = [self.client.get_run(version.run_id).info.artifact_uri]
            model_id = getattr(version, "model_id", None)
            if model_id:
                locations.append(self.client.get_logged_model(model_id).artifact_location)
            for location in locations:
                get_artifact_repository(location).delete_artifacts()
            self.tag(ModelRef(self.name, str(version.version), version.run_id), ARTIFACTS_REMOVED_TAG, now.isoformat())
            removed.append(str(version.version))
        if removed:
            log.warning(
                "retention removed the artifacts of rejected candidates %s", ", ".join(f"v{v}" for v in removed)
            )
        return removed

    def log_reference(self, ref: ModelRef, folder: Path, reason: str) -> str:
        """Log an external version's monitoring artifacts (`folder`) as a run of ours and tag the version with it."""
        run = self._log_run_of_ours(ref, folder, "reference", reason)
        self.tag(ref, REFERENCE_RUN_TAG, run)
        return run

    def download_artifact(self, ref: ModelRef, name: str, folder: Path) -> Path:
        """Download one artifact of a model version's run into `folder`; StoreMissingError if it is gone."""
        import mlflow.artifacts

        return Path(
            self._artifacts(
                ref,
                name,
                lambda: mlflow.artifacts.download_artifacts(
                    run_id=ref.run_id, artifact_path=name, dst_path=str(folder), tracking_uri=self.config.tracking_uri
                ),
            )
        )

    def cached_artifact(self, ref: ModelRef, name: str) -> Path:
        """Return the local path of an artifact of a model version, downloaded once per data root.

        Kept under `<data_root>/monitoring/models/<run id>/` (a version's artifacts never change); the download
        goes to a hidden folder first, so a killed download is never mistaken for the artifact.
        """
        baseline = self.baseline_run(ref) if name in BASELINE_ARTIFACTS else None
        if baseline is not None:
            ref = ModelRef(ref.name, ref.version, baseline)
        elif name != compiled.ARTIFACT:
            ref = self.artifact_ref(ref)
        target = self.config.work_root / MONITORING / "models" / ref.run_id / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
                os.replace(self.download_artifact(ref, name, Path(tmp)), target)
        return target

    def load_profile(self, ref: ModelRef) -> dict[str, Any]:
        """Return the training-data profile stored with a model version's run."""
        return dict(json.loads(self.cached_artifact(ref, PROFILE_ARTIFACT).read_text()))

    def model_card(self, ref: ModelRef) -> ModelCard:
        """Return what a model version was trained on and why (its lineage artifact)."""
        return ModelCard.model_validate_json(self.cached_artifact(ref, LINEAGE_ARTIFACT).read_text())

    def model_card_of(self, name: str, version: str) -> ModelCard:
        """The model card of a version named by its predictions (name and version columns)."""
        return self.model_card(self.version(version)) if name == self.name else ModelCard()

    def drift_thresholds(self, ref: ModelRef) -> dict[str, dict[str, Any]] | None:
        """Return the drift thresholds calibrated at registration (None for a model registered before them)."""
        from pipelines.core.errors import PipelineError

        try:
            return dict(json.loads(self.cached_artifact(ref, DRIFT_THRESHOLDS_ARTIFACT).read_text()))
        except (PipelineError, OSError) as exc:
            log.warning(
                "model v%s has no calibrated drift thresholds (%s): using the configured ones", ref.version, exc
            )
            return None

    def log_candidate(self, trained: TrainedModel, digests: dict[str, str], lineage: dict[str, str]) -> ModelRef:
        """Log a trained model with its metrics, model card and artifacts, register it, and return the new version."""
        import mlflow
        import pandas as pd
        import sklearn
        from mlflow.models import infer_signature

        config = self.config
        features = config.features.all
        example = trained.reference[features].head(5)
        signature = infer_signature(
            example, predict(trained.model, example, config.model.kind, classes=trained.classes or None).score
        )
        card = ModelCard(
            partitions=digests,
            train_days=trained.train_days,
            holdout_days=trained.holdout_days,
            metrics=trained.metrics,
            lineage=lineage,
            kind=str(config.model.kind),
            classes=trained.classes,
            metric_noise=trained.metric_noise,
        )
        tags = {  # for people browsing MLflow; the pipeline reads the model card instead
            "training.days": f"{trained.train_days[0]}..{trained.train_days[-1]} ({len(trained.train_days)} partitions)",
            "training.holdout_days": ",".join(trained.holdout_days),
            "training.window_digest": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest(),
            "code_version": code_version(),
            "model.kind": str(config.model.kind),
            "model.trainer": config.model.trainer or "built-in",
            **lineage,
        }
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=lineage.get("reason", "train")) as run:
            mlflow.set_tags(tags)
            mlflow.log_params({"decision_threshold": config.model.decision_threshold, **config.model.hyperparameters})
            mlflow.log_metrics({f"holdout_{k}": v for k, v in trained.metrics.items()})
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / PROFILE_ARTIFACT).write_text(json.dumps(trained.profile, indent=2))
                (folder / LINEAGE_ARTIFACT).write_text(card.model_dump_json(indent=2))
                trained.reference.to_parquet(folder / REFERENCE_ARTIFACT, index=False)
                trained.holdout_scores.to_parquet(folder / HOLDOUT_ARTIFACT, index=False)
                (folder / DRIFT_THRESHOLDS_ARTIFACT).write_text(json.dumps(trained.drift_thresholds, indent=2))
                if not compiled.compilable(config):
                    tags["scoring.compiled"] = f"no: {compiled.not_compilable_reason(config)}"
                    mlflow.set_tag("scoring.compiled", tags["scoring.compiled"])
                elif config.scoring.engine != "sklearn":  # never fails the registration: a failure is recorded
                    build = compiled.compile_model(
                        trained.model, folder / compiled.ARTIFACT, threads=config.scoring.threads
                    )
                    tags["scoring.compiled"] = "yes" if build.error is None else f"no: {build.error}"[:250]
                    mlflow.set_tag("scoring.compiled", tags["scoring.compiled"])
                mlflow.log_artifacts(str(folder))
            info = mlflow.sklearn.log_model(
                trained.model,
                name="model",
                signature=signature,
                input_example=example,
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"],
                registered_model_name=config.model.registered_name,
                skops_trusted_types=trusted_types(trained.model),
            )
        ref = ModelRef(config.model.registered_name, str(info.registered_model_version), run.info.run_id)
        for key, value in tags.items():
            self.tag(ref, key, value)
        log.info("registered %s version %s (run %s)", ref.name, ref.version, ref.run_id)
        return ref


def trusted_types(model: Any) -> list[str]:
    """The types skops must trust to load a model this product trained: ours, and what a user trainer's model holds.

    Only models the pipeline itself logged are loaded this way; a `model.trainer` is the deployment's own code.
    """
    with quiet_module_scan():
        import skops.io as sio  # type: ignore[import-untyped]

        return sorted({*SKOPS_TRUSTED_TYPES, *sio.get_untrusted_types(data=sio.dumps(model))})


@contextmanager
def quiet_module_scan() -> Iterator[None]:
    """Silence the warnings skops triggers when it looks functions up in every loaded module (`whichmodule`).

    skops does so when it is imported (for each of scipy's ufuncs) and when it loads a model. Reading a name of a
    module that lazily deprecates its names (Airflow's, in a worker) warns once per name and module: one model load
    wrote 1,160 such lines to a score_partition log. Only warnings raised from skops's lookup are silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"skops\.io\._utils")
        yield


@lru_cache(maxsize=4)
def _load_model(tracking_uri: str, ref: ModelRef) -> Any:
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    try:
        with quiet_module_scan():
            return mlflow.sklearn.load_model(ref.uri)
    except MlflowException as exc:
        if "sklearn" not in str(exc) and "flavor" not in str(exc):
            raise
        log.info("%s has no scikit-learn flavour: loading it as a pyfunc model", ref.uri)
        return mlflow.pyfunc.load_model(ref.uri)


def init_store(config: PipelineConfig) -> str:
    """Create the tracking database and experiment once, before any concurrent use; return the URI."""
    Registry.open(config, create=True)
    return config.tracking_uri


def code_version() -> str:
    """Return the git commit of this code (with `-dirty` for local edits), or `unknown` outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
