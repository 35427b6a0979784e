"""
### rollback_model

Moves the `champion` alias back to the `previous` champion, or to a named version that was
champion before, and appends the move to the audit log. A version that does not exist, or that
was never champion, is refused with a message that says which versions can be chosen.
The next nightly run scores with the restored champion.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

from pipelines.core.config import PipelineConfig, model_sources
from pipelines.core.contracts import AlertEvent, AuditEntry, RollbackParams
from pipelines.surfaces.airflow_adapter import TaskRun, model_dags, pipeline_task
from pipelines.surfaces.notifiers import PipelineAlert


def build(dag_id: str, config: PipelineConfig) -> None:
    """Define rollback_model for one model of the deployment."""

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["nightly-ml", f"model:{config.model.registered_name}", "registry"],
        default_args={
            "owner": "ml-platform",
            "retries": 0,
            "retry_delay": timedelta(minutes=1),
            "on_failure_callback": [PipelineAlert(AlertEvent.TASK_FAILURE)],
        },
        params={
            "target_version": Param(
                None,
                type=["null", "string"],
                pattern=r"^[0-9]{1,9}$",
                title="Version to restore",
                description="Empty: the previous champion.",
            ),
            "reason": Param("", type="string", minLength=3, maxLength=300, title="Why roll back"),
        },
    )
    def rollback_model():
        @task(on_success_callback=[PipelineAlert(AlertEvent.ROLLBACK)])
        @pipeline_task(RollbackParams)
        def rollback(run: TaskRun) -> AuditEntry:
            from pipelines.governance import promotion

            return promotion.rollback(
                run.config, run.params.target_version, run.params.reason, run.triggered_by or "unknown", run.run_id
            )

        rollback()

    rollback_model()


model_dags("rollback_model", build, model_sources())
