"""The in-process DAG runner: real DAG runs (what `airflow dags test` does) paying the imports once per process.

A development surface (the demo, the end-to-end tests, the benches), not part of the product package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.core.contracts import RetrainRequest
from pipelines.core.errors import PipelineError


class RunRefused(PipelineError):
    """The runner refuses a run that would replace an existing one."""


@dataclass
class DagRunOutcome:
    """The result of one DAG run: its state, each task's state and XCom return value, and wall time."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    returns: dict[str, Any]
    seconds: float


def run_dag(
    dag_id: str,
    logical_date: datetime | None,
    conf: dict[str, Any] | None = None,
    ledger: Callable[[str, datetime], None] | None = None,
) -> DagRunOutcome:
    """Run one real DAG run in this process (what `airflow dags test` does), paying imports once per process.

    Airflow's `dag.test` deletes any existing run with the same logical date (a NULL one included, so a
    queued UI or REST run would vanish). This runner never replaces a run: without a logical date it uses
    the current instant (unique per call), and a logical date that already has a run is refused. `ledger`, when
    given, is told the run's dag id and logical date before the run starts (so a run killed half-way is known too).
    """
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
    logical_date = logical_date or datetime.now(UTC)
    with create_session() as session:
        existing = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date))
        if existing is not None:
            raise RunRefused(
                f"{dag_id} already has a run for logical date {logical_date.isoformat()} ({existing.run_id}, "
                f"{existing.state}): the in-process runner never replaces a run. Clear that run to rerun it, or "
                "trigger a new one with the ds Param"
            )
    if ledger is not None:
        ledger(dag_id, logical_date)
    started, began = time.monotonic(), datetime.now(UTC)
    collector = _LogCollector()
    logging.getLogger().addHandler(collector)
    try:
        run = dag.test(logical_date=logical_date, run_conf=conf)
    finally:
        logging.getLogger().removeHandler(collector)
    seconds = time.monotonic() - started
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        states = {ti.task_id: str(ti.state) for ti in tis}
        rows = session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value"
            )
        ).all()
    returns = {task_id: _plain(deserialize(XComModel.deserialize_value(_Row(value)))) for task_id, value in rows}
    _as_the_scheduler_would(dag_id, run.run_id, began, run_note(dag_id, returns), collector)
    return DagRunOutcome(dag_id, run.run_id, str(run.state), states, returns, seconds)


MAX_LOG_RECORDS = 50_000  # per run: a task log file holds at most this many lines (memory stays bounded)


class _LogCollector(logging.Handler):
    """The log records of an in-process run (its tasks run one after another, so their times tell them apart)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[float, str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < MAX_LOG_RECORDS:
            self.records.append((record.created, record.levelname.lower(), record.name, record.getMessage()))


def run_note(dag_id: str, returns: dict[str, Any]) -> str | None:
    """The note a run gets in the Airflow UI: the partition a scoring run scored, the window a training run used."""
    night = returns.get("partition_date")
    if dag_id.startswith("batch_scoring") and isinstance(night, str):
        return f"partition ds={night}"
    window = returns.get("select_training_window")
    if dag_id.startswith("retrain_model") and isinstance(window, dict) and window.get("days"):
        return f"trained on ds={window['days'][0]} to ds={window['days'][-1]} ({window.get('mode', '')})"
    return None


def _as_the_scheduler_would(
    dag_id: str, run_id: str, began: datetime, note: str | None, collector: _LogCollector
) -> None:
    """What a scheduled run has and `dag.test` leaves out: its real start time (dag.test starts it at the logical
    date, so the UI showed runs of 53 days), a note naming its partition, and each task's log file where the
    api-server reads it (the UI otherwise asks a log server on port 8793 that an in-process run never started)."""
    import json

    from airflow.configuration import conf
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from airflow.utils.session import create_session
    from sqlalchemy import select

    handler = FileTaskHandler(base_log_folder=conf.get("logging", "base_log_folder"))
    with create_session() as session:
        stored = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if stored is None:
            return
        stored.start_date = began
        if note:
            stored.note = note
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        for ti in tis:
            if ti.start_date is None:
                continue
            first, last = ti.start_date.timestamp(), (ti.end_date or datetime.now(UTC)).timestamp()
            lines = [r for r in collector.records if first <= r[0] <= last]
            path = Path(handler.local_base) / handler._render_filename(ti, max(ti.try_number, 1), session=session)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as out:
                for created, level, logger, message in lines:
                    stamp = datetime.fromtimestamp(created, UTC).isoformat()
                    out.write(json.dumps({"timestamp": stamp, "level": level, "logger": logger, "event": message}))
                    out.write("\n")


@dataclass
class _Row:
    value: Any


def _plain(value: Any) -> Any:
    """A task's return value as JSON-like data (typed values as their fields), for tables and test assertions."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def retraining_requests(run_id: str) -> list[RetrainRequest]:
    """Return the retraining requests (the Asset events' extras) a DAG run emitted, oldest first."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == run_id).order_by(AssetEvent.timestamp)
        ).all()
        return [RetrainRequest.model_validate(e.extra or {}) for e in events]


def retrain_params(requests: list[RetrainRequest]) -> dict[str, str]:
    """The Params of the retrain_model run the scheduler would start on these requests (`dag.test` cannot pass the
    triggering events, so what they carry goes in as Params: why, and the window they ask for)."""
    from pipelines.flows.retraining import reason_from_trigger, requested_window

    window = requested_window(requests)
    return {"reason": reason_from_trigger("retraining request", requests)} | ({"window": window} if window else {})


def unpause(dag_ids: list[str]) -> list[str]:
    """Unpause these DAGs (those the metadata DB knows); return the ones unpaused now.

    Airflow creates DAGs paused, and a paused DAG starts no run: an Asset event or a trigger from the UI would
    queue nothing. The demo unpauses the DAGs that only run when asked (retrain_model on a retraining request,
    rollback_model by hand); batch_scoring stays paused, since its schedule would start tonight's run at once.
    """
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.scalars(select(DagModel).where(DagModel.dag_id.in_(dag_ids), DagModel.is_paused)).all()
        for dag in found:
            dag.is_paused = False
        return sorted(dag.dag_id for dag in found)


def forget_runs(runs: list[tuple[str, datetime]]) -> int:
    """Delete these runs (dag id, logical date), with their task instances and XComs, from the metadata DB.

    For a demo that starts over: the runner never replaces a run, so a second demo over the same nights would be
    refused otherwise. Only the runs named are touched: other runs of the same DAGs (a UI or REST trigger, another
    user's backfill) stay. Returns how many runs were deleted.
    """
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    deleted = 0
    with create_session() as session:
        for dag_id, logical_date in runs:
            run_ids = session.scalars(
                select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
            ).all()
            for model in (XComModel, TaskInstance, DagRun):
                session.execute(delete(model).where(model.dag_id == dag_id, model.run_id.in_(run_ids)))
            deleted += len(run_ids)
    return deleted
