"""Run real DAG runs in one Airflow process: bootstrap, a series of nights, then a rerun of the first night.

Usage: drive_nights.py OUT_DIR WINDOW_END FIRST_NIGHT LAST_NIGHT. Writes OUT_DIR/outcomes.json and a copy of the
first night's predictions made before its rerun.
"""

import json
import shutil
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from harness.runner import run_dag
from pipelines.core.config import load_config
from pipelines.core.paths import PREDICTIONS
from pipelines.storage.partitions import partition_dir

out_dir, window_end, first, last = (
    Path(sys.argv[1]),
    sys.argv[2],
    date.fromisoformat(sys.argv[3]),
    date.fromisoformat(sys.argv[4]),
)
config = load_config()
outcomes = {"bootstrap": asdict(run_dag("retrain_model", None, {"window_end": window_end, "reason": "bootstrap"}))}
night = first
while night <= last:
    logical = datetime.combine(night + timedelta(days=1), time(2, 0), tzinfo=UTC)
    outcomes[night.isoformat()] = asdict(run_dag("batch_scoring", logical))
    night += timedelta(days=1)
first_predictions = partition_dir(config.data_root, PREDICTIONS, first)
shutil.copytree(first_predictions, out_dir / "first_run_predictions")
outcomes["rerun"] = asdict(run_dag("batch_scoring", None, {"ds": first.isoformat()}))
outcomes["forced"] = asdict(run_dag("batch_scoring", None, {"ds": last.isoformat(), "force_retrain": True}))

# A run queued from the UI or REST (no logical date) must survive in-process runs of the same DAG, and a logical
# date that already has a run is refused rather than replaced (Airflow's dag.test would delete both).
from airflow.api.common.trigger_dag import trigger_dag  # noqa: E402
from airflow.utils.types import DagRunTriggeredByType  # noqa: E402

from pipelines.core.errors import PipelineError  # noqa: E402

queued = trigger_dag("batch_scoring", triggered_by=DagRunTriggeredByType.REST_API, conf={"ds": first.isoformat()})
outcomes["queued_run_id"] = queued.run_id
outcomes["beside_queued"] = asdict(run_dag("batch_scoring", None, {"ds": last.isoformat()}))
try:
    run_dag("batch_scoring", datetime.combine(first + timedelta(days=1), time(2, 0), tzinfo=UTC))
    outcomes["same_logical_date"] = "ran"
except PipelineError as exc:
    outcomes["same_logical_date"] = str(exc)

outcomes["retrain"] = asdict(run_dag("retrain_model", None, {"window_end": "2026-09-13", "reason": "e2e retrain"}))
outcomes["after_retrain"] = asdict(run_dag("batch_scoring", None, {"ds": "2026-09-15"}))
outcomes["rollback_bad"] = asdict(run_dag("rollback_model", None, {"target_version": "99", "reason": "typo"}))
outcomes["rollback"] = asdict(run_dag("rollback_model", None, {"reason": "e2e rollback"}))
outcomes["after_rollback"] = asdict(run_dag("batch_scoring", None, {"ds": "2026-09-16"}))

from airflow.models.asset import AssetEvent  # noqa: E402
from airflow.utils.session import create_session  # noqa: E402
from sqlalchemy import select  # noqa: E402

with create_session() as session:
    from airflow.models import DagRun

    outcomes["runs"] = [r.run_id for r in session.scalars(select(DagRun).where(DagRun.dag_id == "batch_scoring")).all()]
    outcomes["asset_events"] = [
        {"asset": e.asset.name, "extra": e.extra, "source_run_id": e.source_run_id}
        for e in session.scalars(select(AssetEvent)).all()
    ]
(out_dir / "outcomes.json").write_text(json.dumps(outcomes, default=str, indent=2))
