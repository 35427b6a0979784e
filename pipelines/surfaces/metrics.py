"""The deployment's monitoring facts as OpenMetrics text, for Prometheus to scrape from the plugin's `/metrics`.

Composed with prometheus_client (its exposition escapes every label value). Labels are bounded: the model (a
config's registered name), the version of the newest night, the metric and stage names the product defines, and
small fixed sets of states. No data value ever becomes a label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from pipelines.core.config import ModelSource, PipelineConfig
from pipelines.core.contracts import AuditAction
from pipelines.core.errors import AuditIntegrityError
from pipelines.governance import audit
from pipelines.storage import episodes, history

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "nightly_ml"
STATUSES = ("scored", "warned", "quarantined")


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class DeploymentCollector(Collector):
    """Reads each model's history, open episode and audit log when Prometheus scrapes."""

    def __init__(self, sources: list[ModelSource], pending: dict[str, int]) -> None:
        self.sources, self.pending = sources, pending

    def collect(self) -> Iterator[Metric]:
        families = {
            "config": _gauge("model_config_ok", "1 when the model's config loads, 0 when it is broken", ["model"]),
            "info": _gauge(
                "model_info", "The model's kind and current champion version", ["model", "kind", "champion"]
            ),
            "last": _gauge(
                "last_night_timestamp_seconds", "The newest successfully scored partition (its date, UTC)", ["model"]
            ),
            "rows": _gauge("rows_scored", "Rows scored in the newest night", ["model", "version"]),
            "partitions": _gauge("partitions", "Nights in the history by outcome", ["model", "status"]),
            "share": _gauge(
                "drift_share", "Share of feature columns drifted or warned, newest night", ["model", "version"]
            ),
            "drifted": _gauge("drifted_columns", "Feature columns drifted, newest night", ["model", "version"]),
            "estimated": _gauge(
                "estimated_metric",
                "The primary metric estimated without labels, newest night",
                ["model", "version", "metric"],
            ),
            "realised": _gauge(
                "realised_metric", "The primary metric on labels, newest labelled night", ["model", "version", "metric"]
            ),
            "low": _gauge(
                "realised_metric_low", "Lower end of the realised metric's 95% interval", ["model", "version", "metric"]
            ),
            "high": _gauge(
                "realised_metric_high",
                "Upper end of the realised metric's 95% interval",
                ["model", "version", "metric"],
            ),
            "decision": _gauge("decision", "1 for the newest night's retraining decision", ["model", "decision"]),
            "episode": _gauge("episode_open", "1 when a retraining episode is open, by its state", ["model", "state"]),
            "speed": _gauge("rows_per_second", "Scoring throughput of the newest night", ["model", "version"]),
            "stages": _gauge("stage_seconds", "Seconds per stage of the newest night", ["model", "stage"]),
            "pending": _gauge("pending_approvals", "Promotions waiting for a person's answer", ["model"]),
            "audit": _gauge("audit_chain_ok", "1 when the audit log verifies, 0 when it does not", ["model"]),
            "rejected": _gauge("rejected_candidates", "Candidates the gate or a person rejected", ["model"]),
        }
        for source in self.sources:
            if source.config is None:
                families["config"].add_metric([source.file.stem], 0)
                continue
            families["config"].add_metric([source.config.model.registered_name], 1)
            self._model(source, source.config, families)
        yield from families.values()

    def _model(self, source: ModelSource, config: PipelineConfig, out: dict[str, GaugeMetricFamily]) -> None:
        model, metric = config.model.registered_name, config.retraining.metric
        out["pending"].add_metric([model], self.pending.get(source.dag_id("retrain_model"), 0))
        champion = "none"
        try:
            entries = audit.read_audit(config)
            out["audit"].add_metric([model], 1)
            last = audit.expected_champion(entries)
            champion = last.to_version if last else "none"
            out["rejected"].add_metric([model], len({e.to_version for e in entries if e.action == AuditAction.REJECT}))
        except AuditIntegrityError:
            out["audit"].add_metric([model], 0)
        out["info"].add_metric([model, str(config.model.kind), champion], 1)
        episode = episodes.open_episode(config)
        out["episode"].add_metric([model, episode.state.value if episode else "none"], 1 if episode else 0)
        nights = history.read_history(config)
        if nights.empty:
            return
        passed = nights["validation_success"].fillna(False).astype(bool)
        warned = passed & nights["validation_warnings"].map(lambda w: bool(w))
        counts = {
            "scored": int((passed & ~warned).sum()),
            "warned": int(warned.sum()),
            "quarantined": int((~passed).sum()),
        }
        for status in STATUSES:
            out["partitions"].add_metric([model, status], counts[status])
        scored = nights[passed].sort_values(["ds", "updated_at"])
        if scored.empty:
            return
        newest = scored.iloc[-1]
        version = str(newest["model_version"])
        day = datetime.fromisoformat(str(newest["ds"])).replace(tzinfo=UTC)
        out["last"].add_metric([model], day.timestamp())
        self._add(out["rows"], [model, version], newest["rows"])
        self._add(out["share"], [model, version], newest["drift_share"])
        self._add(out["drifted"], [model, version], len(newest["drifted_columns"] or []))
        self._add(out["estimated"], [model, version, metric], newest.get("estimated_metric"))
        self._add(out["speed"], [model, version], newest.get("scoring_rows_per_s"))
        if newest.get("decision"):
            out["decision"].add_metric([model, str(newest["decision"])], 1)
        for stage, seconds in sorted((newest.get("task_seconds") or {}).items()):
            self._add(out["stages"], [model, stage], seconds)
        labelled = scored[scored["realised_metric"].map(_finite).notna()] if "realised_metric" in scored else scored[:0]
        if not labelled.empty:
            night = labelled.iloc[-1]
            labels = [model, str(night["model_version"]), metric]
            self._add(out["realised"], labels, night["realised_metric"])
            interval = (night.get("realised_metrics") or {}).get("interval") or {}
            self._add(out["low"], labels, interval.get("low"))
            self._add(out["high"], labels, interval.get("high"))

    @staticmethod
    def _add(family: GaugeMetricFamily, labels: list[str], value: Any) -> None:
        number = _finite(value)
        if number is not None:
            family.add_metric(labels, number)


def render_metrics(sources: list[ModelSource], pending: dict[str, int] | None = None) -> bytes:
    """The deployment's metrics as OpenMetrics text (ends with `# EOF`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(sources, pending or {}))
    return bytes(generate_latest(registry))
