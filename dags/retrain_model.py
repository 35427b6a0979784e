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
  move is appended to the hash-chained audit log.

Runs when `batch_scoring` emits a retraining request (Asset event), or by hand.
`max_active_runs=1` plus a file lock around alias moves keep two promotions from interleaving.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.core.config import load_config
from pipelines.core.contracts import Alias, Approval, AuditEntry, Candidate, GateResult, PromotionPath, TrainingWindow
from pipelines.surfaces.airflow_adapter import optional_date_param
from pipelines.surfaces.notifiers import PipelineAlert

CONFIG = load_config()
# The library's verdict after the gate -> the tasks it leads to (an approval leads on to the promotion).
NEXT_TASKS: dict[PromotionPath, str | list[str]] = {
    PromotionPath.REJECT: "reject_candidate",
    PromotionPath.DONE: "done",
    PromotionPath.ASK_APPROVAL: ["approve_promotion", "promote_candidate"],
    PromotionPath.PROMOTE: "promote_candidate",
}


class ApprovalStep(ApprovalOperator):
    """ApprovalOperator whose return value is the answer (`Approval`) on both outcomes.

    On Reject it skips only the tasks that wait for an Approve (promote_candidate), not those whose trigger rule
    is all_done (settle_approval, which audits who refused): they take the answer as an argument.
    """

    def execute_complete(self, context, event):
        from airflow.providers.standard.operators.hitl import HITLOperator

        from pipelines.core.contracts import Approval

        answer = HITLOperator.execute_complete(self, context=context, event=event)
        approval = Approval.from_event({**answer, "timedout": event.get("timedout")})
        self.hitl_summary_extra["approved"] = approval.approved
        # stored before the skip: the tasks that settle the answer may run before this task's return is stored
        context["ti"].xcom_push(key="return_value", value=approval)
        if not approval.approved:
            waiting = [t for t in context["task"].get_direct_relatives(upstream=False) if t.trigger_rule != "all_done"]
            self.skip(ti=context["ti"], tasks=waiting)
        return approval


@dag(
    dag_id="retrain_model",
    schedule=[Asset(CONFIG.retrain_asset_name)],
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightly-ml", "training"],
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": [PipelineAlert("task_failure")],
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
    @task
    def select_training_window(params: dict) -> TrainingWindow:
        """Pick the labelled partitions; too little labelled data skips this run (the next request retries)."""
        from pipelines.flows import retraining
        from pipelines.surfaces.airflow_adapter import skip_until_ready

        with skip_until_ready():
            return retraining.select_training_window(
                load_config(), params.get("window_end"), params.get("window"), params.get("window_partitions")
            )

    @task
    def train_candidate(window: TrainingWindow, params: dict) -> Candidate:
        """Train and register; too few labelled rows (or a single class) skips the run instead of failing it."""
        from pipelines.flows import retraining
        from pipelines.surfaces.airflow_adapter import skip_until_ready

        context = get_current_context()
        extras = [e.extra for events in (context.get("triggering_asset_events") or {}).values() for e in events]
        lineage = {
            "airflow_run_id": context["run_id"],
            "reason": retraining.reason_from_trigger(params["reason"], extras),
        }
        with skip_until_ready():
            return retraining.train_candidate(load_config(), window, lineage)

    @task
    def bootstrap_or_challenge(candidate: Candidate) -> Alias:
        from pipelines.flows import retraining
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():  # a missing champion with a former one on record is refused
            return retraining.bootstrap_or_challenge(load_config(), candidate, get_current_context()["run_id"])

    @task
    def evaluate_gate(candidate: Candidate, alias: Alias) -> GateResult:
        from pipelines.governance import gate
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return gate.evaluate_gate(load_config(), candidate, alias)

    @task.branch
    def promotion_path(result: GateResult) -> str | list[str]:
        from pipelines.governance import gate

        return NEXT_TASKS[gate.promotion_path(load_config(), result)]

    @task(retries=0, on_success_callback=[PipelineAlert("rejection")])
    def reject_candidate(candidate: Candidate, result: GateResult) -> AuditEntry:
        from pipelines.governance import promotion

        return promotion.reject_candidate(load_config(), candidate, result, get_current_context()["run_id"])

    # Runs when the branch chose it directly (no approval required), or after an Approve; a Reject skips it.
    @task(trigger_rule="none_failed_min_one_success", retries=0, on_success_callback=[PipelineAlert("promotion")])
    def promote_candidate(candidate: Candidate, result: GateResult, approval: Approval | None) -> AuditEntry:
        from pipelines.governance import promotion

        return promotion.promote_candidate(load_config(), candidate, result, approval, get_current_context()["run_id"])

    @task(trigger_rule="all_done", retries=0, on_success_callback=[PipelineAlert("rejection")])
    def settle_approval(
        candidate: Candidate | None, result: GateResult | None, approval: Approval | None
    ) -> AuditEntry | None:
        """Audit a refused or timed-out approval (the approval step skips the promotion itself)."""
        from pipelines.governance import promotion

        return promotion.settle_approval(load_config(), candidate, result, approval, get_current_context()["run_id"])

    window = select_training_window()
    candidate = train_candidate(window)
    alias = bootstrap_or_challenge(candidate)
    result = evaluate_gate(candidate, alias)
    approve = ApprovalStep(
        task_id="approve_promotion",
        subject="Promote the retrained model?",
        body="{{ ti.xcom_pull(task_ids='evaluate_gate').summary }}",
        defaults="Reject",
        response_timeout=timedelta(hours=CONFIG.promotion.approval_timeout_hours),
        retries=0,
    )
    promoted = promote_candidate(candidate, result, approve.output)
    promotion_path(result) >> [approve, reject_candidate(candidate, result), promoted, EmptyOperator(task_id="done")]
    promoted >> settle_approval(candidate, result, approve.output)


retrain_model()
