"""Airflow glue (with `notifiers`, the only modules of `pipelines` importing Airflow): the task adapter, the
approval step, Params, the start date, the nightly timetable and the error mapping.

A task body in `dags/` is the one call to its library function. `pipeline_task` gives it a `TaskRun` (the
config, the run id, who triggered it, the DAG's trigger Params as one typed model and the retraining requests
that started the run) and maps the project's user errors to failures Airflow does not retry.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.utils.types import DagRunType
from pydantic import ValidationError

from pipelines.core.config import ModelSource, PipelineConfig, bind_dag, config_for_dag
from pipelines.core.contracts import Approval, RetrainRequest, TriggerParams
from pipelines.core.errors import PipelineError, TrainingNotReady, TriggerParamsError

# Airflow's start_date for batch_scoring: a date no data precedes. Airflow ends a run whose logical date is before
# start_date "success" without running a task, so the DAG never has a later one: the config's `start_date` and the
# data's first partition are enforced by the tasks, which fail and say why (partitions.partition_date,
# wait_for_partition). It also keeps DAG parsing from listing the data root.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)


class NightTimetable(CronDataIntervalTimetable):
    """The config's cadence as Airflow's cron data-interval timetable, whose scheduled runs are named by their night.

    A scheduled run scores the partition its data interval begins on (`partitions.partition_date`), but Airflow
    names it after the moment it may start, the next tick (`scheduled__2026-10-15T02:00:00+00:00` scores
    2026-10-14). This timetable appends the night: `scheduled__2026-10-15T02:00:00+00:00__ds-2026-10-14`. Other runs
    keep Airflow's names (a manual trigger's `ds` Param is not known here; backfills are named by Airflow itself).
    The plugin registers the class, as Airflow requires for a custom timetable.
    """

    def generate_run_id(self, *, run_type: Any, run_after: Any, data_interval: Any, **extra: Any) -> str:
        run_id = super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval, **extra)
        if run_type != DagRunType.SCHEDULED or data_interval is None:
            return run_id
        return f"{run_id}__ds-{data_interval.start.astimezone(UTC).date().isoformat()}"


def night_timetable(cron: str) -> CronDataIntervalTimetable:
    """batch_scoring's timetable: NightTimetable when the plugin registered it, else Airflow's own.

    Airflow stores a DAG whose timetable no plugin registered as an import error, so a deployment without
    `plugins/` on its plugins folder keeps its DAGs. Only the run names lose the night, and the parse log says why.
    """
    from airflow import plugins_manager

    try:
        registered = NightTimetable in plugins_manager.get_timetables_plugins().values()
    except ValueError:  # no plugins folder configured
        registered = False
    if registered:
        return NightTimetable(cron, timezone="UTC")
    logging.getLogger(__name__).warning(
        "the monitoring plugin is not loaded (put plugins/ on Airflow's plugins folder): batch_scoring keeps "
        "Airflow's run names, without the night"
    )
    return CronDataIntervalTimetable(cron, timezone="UTC")


@dataclass(frozen=True)
class TaskRun:
    """What a task needs from Airflow besides its arguments."""

    config: PipelineConfig
    run_id: str
    params: Any = None  # the DAG's TriggerParams model (ScoringParams, RetrainParams, RollbackParams)
    triggered_by: str | None = None  # the user who triggered the run (None for a scheduled run)
    requests: list[RetrainRequest] = field(default_factory=list)  # the retraining Asset events that started it

    def accepted_by(self, accepted: bool) -> str | None:
        """Who accepted a quarantined night for scoring (None when the run does not accept it)."""
        return (self.triggered_by or "an operator (accept_quarantine)") if accepted else None


def read_params(model: type[TriggerParams], raw: Any, dag_id: str) -> TriggerParams:
    """The run's Params as the DAG's model; a value that does not fit raises TriggerParamsError naming the Param."""
    values = {key: raw[key] for key in raw} if raw is not None else {}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TriggerParamsError(
            f"the trigger Params of {dag_id} are not valid ({problems}); trigger the DAG again with valid values"
        ) from exc


def task_run(context: Any, params: type[TriggerParams] | None) -> TaskRun:
    """Build the TaskRun of the running task from its Airflow context."""
    run = context.get("dag_run")
    requests = [
        RetrainRequest.model_validate(event.extra or {})
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
    ]
    dag_id = context["dag"].dag_id
    return TaskRun(
        config=config_for_dag(dag_id),
        run_id=context["run_id"],
        params=read_params(params, context.get("params"), dag_id) if params else None,
        triggered_by=getattr(run, "triggering_user_name", None),
        requests=requests,
    )


def pipeline_task(
    params: type[TriggerParams] | None = None, *, skip_when_not_ready: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Adapt a task body `body(run: TaskRun, *arguments)` for Airflow's `@task`.

    The body's first parameter is filled with the run's TaskRun (its Params read as the `params` model); Airflow
    sees the rest of the signature. A PipelineError fails the task without retry; with `skip_when_not_ready`,
    TrainingNotReady skips it (a later request retries).
    """

    def adapt(body: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(body)
        first, *rest = signature.parameters.values()

        @functools.wraps(body)
        def run_task(*args: Any, **kwargs: Any) -> Any:
            from airflow.sdk import get_current_context

            from pipelines.surfaces.lineage import annotate

            guard = skip_until_ready() if skip_when_not_ready else fail_without_retry_on_user_errors()
            context = get_current_context()
            with guard:
                run = task_run(context, params)
                result = body(run, *args, **kwargs)
            annotate(context.get("task"), run.config, result)  # what the OpenLineage provider reports
            return result

        run_task.__signature__ = signature.replace(parameters=rest)  # type: ignore[attr-defined]
        run_task.__annotations__ = {k: v for k, v in body.__annotations__.items() if k != first.name}
        return run_task

    return adapt


def wait_for_partition(run: TaskRun, night: str) -> Any:
    """A rescheduling sensor's poke for `incoming/ds=<night>`: done when it arrived; fails after the timeout."""
    from airflow.sdk import PokeReturnValue, get_current_context

    from pipelines.storage import partitions

    present, message = partitions.wait_for_partition(run.config, night)
    print(message)
    if not present:
        give_up_waiting(get_current_context(), run.config.partition_wait.timeout_minutes, message)
    return PokeReturnValue(is_done=present, xcom_value=night)


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


class ApprovalStep(ApprovalOperator):
    """ApprovalOperator whose return value is the answer (`Approval`) on both outcomes.

    On Reject it skips only the tasks that wait for an Approve (promote_candidate), not those whose trigger rule
    is all_done (settle_approval, which audits who refused): they take the answer as an argument.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Approval:
        from airflow.providers.standard.operators.hitl import HITLOperator

        answer = HITLOperator.execute_complete(self, context=context, event=event)
        approval = Approval.from_event({**answer, "timedout": event.get("timedout")})
        self.hitl_summary_extra["approved"] = approval.approved
        # stored before the skip: the tasks that settle the answer may run before this task's return is stored
        context["ti"].xcom_push(key="return_value", value=approval)
        if not approval.approved:
            waiting = [t for t in context["task"].get_direct_relatives(upstream=False) if t.trigger_rule != "all_done"]
            self.skip(ti=context["ti"], tasks=waiting)
        return approval


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


def model_dags(base: str, build: Callable[[str, PipelineConfig], Any], sources: list[ModelSource]) -> None:
    """Define one DAG `base` per model of the deployment (`build(dag_id, config)`), each bound to its config file.

    A model whose config is broken gets a DAG of the same id whose one task fails with the config's error, so the
    error shows where that model's DAG is, and the other models' DAGs are untouched.
    """
    for source in sources:
        dag_id = source.dag_id(base)
        bind_dag(dag_id, source)
        if source.config is None:
            broken_model_dag(dag_id, source)
        else:
            build(dag_id, source.config)


def broken_model_dag(dag_id: str, source: ModelSource) -> Any:
    """A DAG that says a model's config is broken: unscheduled, and its only task fails with the error."""
    import warnings

    from airflow.sdk import dag, task

    error = str(source.error)
    shown = error.replace("`", "'")  # the error sits in a code block it must not end
    logging.getLogger(__name__).error("model config %s is broken: %s", source.file, error)
    warnings.warn(f"model config {source.file.name} is broken, {dag_id} cannot run: {error}", stacklevel=2)

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=EARLIEST_START,
        catchup=False,
        tags=["nightly-ml", "broken-config"],
        doc_md=f"### The model config `{source.file.name}` is broken\n\n```\n{shown}\n```\n\nFix the file; the "
        "other models' DAGs are not affected.",
    )
    def broken() -> None:
        @task(retries=0)
        def config_error() -> None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"model config {source.file.name} is broken: {error}")

        config_error()

    return broken()
