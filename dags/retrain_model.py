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

from datetime import datetime, timedelta, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.airflow_adapter import optional_date_param
from pipelines.config import load_config
from pipelines.notifiers import PipelineAlert

CONFIG = load_config()


class ApprovalStep(ApprovalOperator):
    """ApprovalOperator that also keeps the answer (options, who, timed out) in XCom `answer`.

    On Reject the operator skips its downstream tasks before a return value is stored, so the
    answer is pushed first; settle_approval needs it to audit who refused.
    """

    def execute_complete(self, context, event):
        answer = {k: event.get(k) for k in ("chosen_options", "responded_by_user", "timedout")}
        context["ti"].xcom_push(key="answer", value=answer)
        return super().execute_complete(context=context, event=event)


@dag(
    dag_id="retrain_model",
    schedule=[Asset(CONFIG.retrain_asset_name)],
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
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
        "window_days": Param(
            None, type=["null", "integer"], minimum=2, maximum=366, title="Window length in days",
            description="Empty: training.window_partitions of the config.",
        ),
        "reason": Param("manual", type="string", maxLength=500, title="Why this model is trained"),
    },
)
def retrain_model():
    @task
    def select_training_window(params: dict) -> dict:
        """Pick the labelled partitions; too little labelled data skips this run (the next request retries)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.errors import TrainingNotReady
        from pipelines.retraining import plan_training_window

        with fail_without_retry_on_user_errors():
            try:
                return plan_training_window(
                    load_config(), params.get("window_end"), params.get("window"), params.get("window_partitions")
                )
            except TrainingNotReady as exc:
                raise AirflowSkipException(str(exc)) from exc

    @task
    def train_candidate(window: dict, params: dict) -> dict:
        """Train and register; too few labelled rows (or a single class) skips the run instead of failing it."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.errors import TrainingNotReady
        from pipelines.retraining import reason_from_trigger
        from pipelines.retraining import train_candidate as train

        context = get_current_context()
        extras = [e.extra for events in (context.get("triggering_asset_events") or {}).values() for e in events]
        lineage = {
            "airflow_run_id": context["run_id"],
            "reason": reason_from_trigger(params["reason"], extras),
            "training.window": window["mode"] + (f" from the drift onset {window['onset']}" if window["onset"] else ""),
        }
        with fail_without_retry_on_user_errors():
            try:
                return train(load_config(), window["days"], lineage)
            except TrainingNotReady as exc:
                raise AirflowSkipException(str(exc)) from exc

    @task
    def bootstrap_or_challenge(candidate: dict) -> str:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.retraining import bootstrap_or_challenge as assign

        with fail_without_retry_on_user_errors():  # a missing champion with a former one on record is refused
            return assign(load_config(), candidate, get_current_context()["run_id"])

    @task
    def evaluate_gate(candidate: dict, alias: str) -> dict:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.promotion import gate_or_bootstrap

        with fail_without_retry_on_user_errors():
            return gate_or_bootstrap(load_config(), candidate, alias)

    @task.branch
    def choose_path(gate: dict) -> str:
        from pipelines.promotion import promotion_path

        return promotion_path(load_config(), gate)

    @task(retries=0, on_success_callback=[PipelineAlert("rejection")])
    def reject_candidate(candidate: dict, gate: dict) -> dict:
        from pipelines.promotion import reject
        from pipelines.registry import ModelRef

        ref = ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
        reason = ("first model not made champion: " if gate["bootstrap"] else "gate failed: ") + "; ".join(gate["reasons"])
        return reject(load_config(), ref, reason, "gate", get_current_context()["run_id"], gate)

    # Its only upstream tasks are auto_approve and approve_promotion (inputs are pulled, not passed), so
    # none_failed_min_one_success cannot be satisfied by some other task's success.
    @task(trigger_rule="none_failed_min_one_success", retries=0, on_success_callback=[PipelineAlert("promotion")])
    def promote_candidate() -> dict:
        from pipelines.promotion import promote_after_gate

        context = get_current_context()
        ti = context["ti"]
        return promote_after_gate(
            load_config(),
            ti.xcom_pull(task_ids="train_candidate"),
            ti.xcom_pull(task_ids="evaluate_gate"),
            ti.xcom_pull(task_ids="approve_promotion", key="answer"),
            context["run_id"],
        )

    @task(trigger_rule="all_done", retries=0, on_success_callback=[PipelineAlert("rejection")])
    def settle_approval() -> dict | None:
        """Audit a refused or timed-out approval (the approval step skips the promotion itself)."""
        from pipelines.promotion import settle_unapproved

        ti = get_current_context()["ti"]
        candidate, gate = ti.xcom_pull(task_ids="train_candidate"), ti.xcom_pull(task_ids="evaluate_gate")
        if candidate is None or gate is None:  # skipped (not ready) or failed before the gate
            return None
        answer = ti.xcom_pull(task_ids="approve_promotion", key="answer")
        return settle_unapproved(load_config(), candidate, gate, answer, ti.run_id)

    window = select_training_window()
    candidate = train_candidate(window)
    alias = bootstrap_or_challenge(candidate)
    gate = evaluate_gate(candidate, alias)
    path = choose_path(gate)
    auto = EmptyOperator(task_id="auto_approve")
    approve = ApprovalStep(
        task_id="approve_promotion",
        subject="Promote the retrained model?",
        body="{{ ti.xcom_pull(task_ids='evaluate_gate')['summary'] }}",
        defaults="Reject",
        response_timeout=timedelta(hours=CONFIG.promotion.approval_timeout_hours),
        retries=0,
    )
    promoted = promote_candidate()
    path >> [auto, approve, reject_candidate(candidate, gate), EmptyOperator(task_id="done")]
    [auto, approve] >> promoted >> settle_approval()


retrain_model()
