"""Airflow glue (with `notifiers`, the only modules of `pipelines` importing Airflow): start date, Params, error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipelines.core.errors import PipelineError, TrainingNotReady

# Airflow's start_date for batch_scoring: a date no data precedes. Airflow ends a run whose logical date is before
# start_date "success" without running a task, so the DAG never has a later one: the config's `start_date` and the
# data's first partition are enforced by the tasks, which fail and say why (lake.partition_date, wait_for_partition).
# It also keeps DAG parsing from listing the data root.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)


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


@contextmanager
def skip_until_ready() -> Iterator[None]:
    """Like `fail_without_retry_on_user_errors`, but too little labelled data yet skips the task (a later run retries)."""
    from airflow.sdk.exceptions import AirflowSkipException

    with fail_without_retry_on_user_errors():
        try:
            yield
        except TrainingNotReady as exc:
            raise AirflowSkipException(str(exc)) from exc
