"""
### retrain_model

Trains a candidate on the labelled partitions of the training window (by default the days since
the drift onset the monitoring history recorded; too few of them yet skips the run, and the next
retraining request retries), registers it in MLflow with its lineage, and takes it through the
champion/challenger gate. Promotions, rejections and failures are alerted (config `alerts`).

- No champion yet: the candidate **bootstraps** the `champion` alias (audited).
- Otherwise it becomes `challenger`; **evaluate_gate** compares candidate and champion on the
  newest labelled days neither trained on (paired bootstrap interval of the metric difference,
  absolute floors) and saves the comparison. A failing candidate is rejected (tagged, audited).
- A passing candidate is promoted at once, or, with `promotion.require_approval`, after a person
  approves in Airflow's human-in-the-loop step (no answer before the timeout means Reject).
- Promotion moves `champion` to the candidate and `previous` to the old champion; every alias
  move is appended to the hash-chained audit log. A promotion closes the open episode.
- **learn_from_rejection**: a rejected candidate trained on drifted data that was not better means the shift
  is harmless for this model: the champion's drift reference is rebaselined to the window (audited) and the
  drift episode closes. A candidate that does not fix a failing metric backs the episode off until the
  labelled window has moved `retraining.retry_after_partitions`, with one "retraining is not helping" alert.
  Artifacts of candidates rejected more than `promotion.keep_rejected_days` ago are removed.

Runs when `batch_scoring` emits a retraining request (Asset event, once per episode, when a run can
train; the request may ask for the sliding window), or by hand.
`max_active_runs=1` plus a file lock around alias moves keep two promotions from interleaving.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Asset, Param, dag, task

from pipelines.core.config import PipelineConfig, model_sources
from pipelines.core.contracts import (
    AlertEvent,
    Alias,
    Approval,
    AuditEntry,
    Candidate,
    GateResult,
    Lesson,
    PromotionPath,
    RetrainParams,
    TrainingWindow,
)
from pipelines.surfaces.airflow_adapter import ApprovalStep, TaskRun, model_dags, optional_date_param, pipeline_task
from pipelines.surfaces.notifiers import PipelineAlert

# The library's verdict after the gate -> the tasks it leads to (an approval leads on to the promotion).
NEXT_TASKS: dict[PromotionPath, str | list[str]] = {
    PromotionPath.REJECT: "reject_candidate",
    PromotionPath.DONE: "done",
    PromotionPath.ASK_APPROVAL: ["approve_promotion", "promote_candidate"],
    PromotionPath.PROMOTE: "promote_candidate",
}


def build(dag_id: str, config: PipelineConfig) -> None:
    """Define retrain_model for one model of the deployment."""

    @dag(
        dag_id=dag_id,
        schedule=[Asset(config.retrain_asset_name)],
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["nightly-ml", f"model:{config.model.registered_name}", "training"],
        default_args={
            "owner": "ml-platform",
            "retries": 1,
            "retry_delay": timedelta(minutes=5),
            "on_failure_callback": [PipelineAlert(AlertEvent.TASK_FAILURE)],
        },
        params={
            "window_end": optional_date_param(
                "Last day of the training window", "YYYY-MM-DD. Empty: the newest labelled partition."
            ),
            "window": Param(
                None,
                type=["null", "string"],
                enum=[None, "sliding", "since_drift_onset"],
                title="Training window",
                description="Empty: training.window of the config. since_drift_onset trains on the days after the "
                "drift onset the monitoring history recorded; sliding on the newest window_partitions labelled partitions.",
            ),
            "window_partitions": Param(
                None,
                type=["null", "integer"],
                minimum=2,
                maximum=1000,
                title="Window length in partitions",
                description="How many labelled partitions a sliding window holds (at most). Empty: "
                "training.window_partitions of the config.",
            ),
            "reason": Param("manual", type="string", maxLength=500, title="Why this model is trained"),
        },
    )
    def retrain_model():
        # the first task: validates the trigger Params (RetrainParams); too little labelled data skips the run
        @task
        @pipeline_task(RetrainParams, skip_when_not_ready=True)
        def select_training_window(run: TaskRun) -> TrainingWindow:
            """Pick the labelled partitions; too little labelled data skips this run (the next request retries)."""
            from pipelines.flows import retraining

            return retraining.select_training_window(
                run.config,
                run.params.window_end,
                run.params.window or retraining.requested_window(run.requests),
                run.params.window_partitions,
                run.run_id,
            )

        @task
        @pipeline_task(RetrainParams, skip_when_not_ready=True)
        def train_candidate(run: TaskRun, window: TrainingWindow) -> Candidate:
            """Train and register; too few labelled rows (or a single class) skips the run instead of failing it."""
            from pipelines.flows import retraining

            return retraining.train_candidate(
                run.config,
                window,
                {
                    "airflow_run_id": run.run_id,
                    "reason": retraining.reason_from_trigger(run.params.reason, run.requests),
                },
            )

        @task
        @pipeline_task()  # a missing champion with a former one on record is refused
        def bootstrap_or_challenge(run: TaskRun, candidate: Candidate) -> Alias:
            from pipelines.flows import retraining

            return retraining.bootstrap_or_challenge(run.config, candidate, run.run_id)

        @task
        @pipeline_task()
        def evaluate_gate(run: TaskRun, candidate: Candidate, alias: Alias) -> GateResult:
            from pipelines.governance import gate

            return gate.evaluate_gate(run.config, candidate, alias)

        @task.branch
        @pipeline_task()
        def promotion_path(run: TaskRun, result: GateResult) -> str | list[str]:
            from pipelines.governance import gate

            return NEXT_TASKS[gate.promotion_path(run.config, result)]

        @task(retries=0, on_success_callback=[PipelineAlert(AlertEvent.REJECTION)])
        @pipeline_task()
        def reject_candidate(run: TaskRun, candidate: Candidate, result: GateResult) -> AuditEntry:
            from pipelines.governance import promotion

            return promotion.reject_candidate(run.config, candidate, result, run.run_id)

        # Runs when the branch chose it directly (no approval required), or after an Approve; a Reject skips it.
        @task(
            trigger_rule="none_failed_min_one_success",
            retries=0,
            on_success_callback=[PipelineAlert(AlertEvent.PROMOTION)],
        )
        @pipeline_task()
        def promote_candidate(
            run: TaskRun, candidate: Candidate, result: GateResult, approval: Approval | None
        ) -> AuditEntry:
            from pipelines.governance import promotion

            return promotion.promote_candidate(run.config, candidate, result, approval, run.run_id)

        @task(trigger_rule="all_done", retries=0, on_success_callback=[PipelineAlert(AlertEvent.REJECTION)])
        @pipeline_task()
        def settle_approval(
            run: TaskRun, candidate: Candidate | None, result: GateResult | None, approval: Approval | None
        ) -> AuditEntry | None:
            """Audit a refused or timed-out approval (the approval step skips the promotion itself)."""
            from pipelines.governance import promotion

            return promotion.settle_approval(run.config, candidate, result, approval, run.run_id)

        @task(trigger_rule="all_done", retries=0, on_success_callback=[PipelineAlert(AlertEvent.NOT_HELPING)])
        @pipeline_task()
        def learn_from_rejection(
            run: TaskRun,
            candidate: Candidate | None,
            result: GateResult | None,
            window: TrainingWindow | None,
            rejection: AuditEntry | None,
            refusal: AuditEntry | None,
        ) -> Lesson:
            """Rebaseline a harmless drift shift, or back off a retraining that does not help; apply retention."""
            from pipelines.flows import retraining

            return retraining.learn_from_rejection(
                run.config, candidate, result, window, rejection, refusal, run.run_id
            )

        window = select_training_window()
        candidate = train_candidate(window)
        alias = bootstrap_or_challenge(candidate)
        result = evaluate_gate(candidate, alias)
        approve = ApprovalStep(
            task_id="approve_promotion",
            subject="Promote the retrained model?",
            body="{{ ti.xcom_pull(task_ids='evaluate_gate').summary }}",
            defaults="Reject",
            response_timeout=timedelta(hours=config.promotion.approval_timeout_hours),
            retries=0,
        )
        promoted = promote_candidate(candidate, result, approve.output)
        rejected = reject_candidate(candidate, result)
        promotion_path(result) >> [approve, rejected, promoted, EmptyOperator(task_id="done")]
        refused = settle_approval(candidate, result, approve.output)
        promoted >> refused
        learn_from_rejection(candidate, result, window, rejected, refused)

    retrain_model()


model_dags("retrain_model", build, [s for s in model_sources() if s.config is None or s.config.model.retrains])
