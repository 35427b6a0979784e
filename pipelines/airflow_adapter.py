"""Airflow glue (with `notifiers`, the only modules of `pipelines` importing Airflow): error mapping, runs in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time as clock
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.errors import PipelineError
from pipelines.lake import INCOMING, earliest_partition

# With no start_date configured and no partition yet, runs (and backfills) may go back this far.
EARLIEST_START = date(2000, 1, 1)


def start_date(config: PipelineConfig) -> datetime:
    """Return the DAG's start_date: the config's `start_date`, else the earliest incoming partition (else 2000-01-01).

    Airflow never runs a logical date before it, so it bounds backfills; with catchup off it does not make the
    scheduler run the past on its own.
    """
    first = config.start_date or earliest_partition(config.data_root, INCOMING) or EARLIEST_START
    return datetime.combine(first, clock(0, 0), tzinfo=UTC)


def give_up_waiting(context: Any, timeout_minutes: float, message: str) -> None:
    """In a rescheduling sensor's poke: fail (no retry) once it has waited `timeout_minutes`, with `message`."""
    from airflow.sdk.exceptions import AirflowSensorTimeout

    first = context["ti"].get_first_reschedule_date(context)
    waited = (datetime.now(UTC) - first).total_seconds() / 60 if first else 0.0
    if waited >= timeout_minutes:
        raise AirflowSensorTimeout(
            f"gave up after waiting {waited:.0f} minutes (partition_wait.timeout_minutes {timeout_minutes:g}): {message}. "
            "Land the partition and clear this task, or trigger batch_scoring with ds when it arrives"
        )


def optional_date_param(title: str, description: str) -> Any:
    """Return a trigger Param that is empty or a calendar date (YYYY-MM-DD), validated by Airflow before a run exists."""
    from airflow.sdk import Param

    return Param(
        None,
        type=["null", "string"],
        format="date",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        title=title,
        description=description,
    )


@contextmanager
def fail_without_retry_on_user_errors() -> Iterator[None]:
    """Turn the project's user-fixable errors into AirflowFailException: retrying bad data or config cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except PipelineError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class DagRunOutcome:
    """The result of one DAG run: its state, each task's state and XCom return value, and wall time."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    returns: dict[str, Any]
    seconds: float


def run_dag(dag_id: str, logical_date: datetime | None, conf: dict[str, Any] | None = None) -> DagRunOutcome:
    """Run one real DAG run in this process (what `airflow dags test` does), paying imports once per process.

    Airflow's `dag.test` deletes any existing run with the same logical date (a NULL one included, so a
    queued UI or REST run would vanish). This runner never replaces a run: without a logical date it uses
    the current instant (unique per call), and a logical date that already has a run is refused.
    """
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
    logical_date = logical_date or datetime.now(UTC)
    with create_session() as session:
        existing = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date))
        if existing is not None:
            raise PipelineError(
                f"{dag_id} already has a run for logical date {logical_date.isoformat()} ({existing.run_id}, "
                f"{existing.state}): the in-process runner never replaces a run. Clear that run to rerun it, or "
                "trigger a new one with the ds Param"
            )
    started = time.monotonic()
    run = dag.test(logical_date=logical_date, run_conf=conf)
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
    returns = {task_id: XComModel.deserialize_value(_Row(value)) for task_id, value in rows}
    return DagRunOutcome(dag_id, run.run_id, str(run.state), states, returns, seconds)


@dataclass
class _Row:
    value: Any


def retraining_requests(run_id: str) -> list[dict[str, Any]]:
    """Return the extras of the Asset events (retraining requests) a DAG run emitted, oldest first."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == run_id).order_by(AssetEvent.timestamp)
        ).all()
        return [dict(e.extra or {}) for e in events]
