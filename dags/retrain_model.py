"""
### retrain_model

Trains a model on the labelled partitions of the training window and registers it in MLflow.
Runs when `batch_scoring` emits a retraining request (Asset event), or by hand.

With no `champion` yet it **bootstraps** the first model: the new version gets the `champion`
alias and nightly scoring can start. Otherwise the new version gets the `challenger` alias.
Every version carries its lineage: training partitions and their digests, the Airflow run id
and the code version, plus the training-data profile that the validation gate checks against.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.airflow_adapter import optional_date_param
from pipelines.config import load_config

CONFIG = load_config()


@dag(
    dag_id="retrain_model",
    schedule=[Asset(CONFIG.retrain_asset_name)],
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightly-ml", "training"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "window_end": optional_date_param(
            "Last day of the training window", "YYYY-MM-DD. Empty: the newest labelled partition."
        ),
        "reason": Param("manual", type="string", maxLength=200, title="Why this model is trained"),
    },
)
def retrain_model():
    @task
    def select_training_window(params: dict) -> list[str]:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.retraining import select_training_window as select

        with fail_without_retry_on_user_errors():
            return select(load_config(), params.get("window_end"))

    @task
    def train_candidate(days: list[str], params: dict) -> dict:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.retraining import reason_from_trigger
        from pipelines.retraining import train_candidate as train

        context = get_current_context()
        extras = [e.extra for events in (context.get("triggering_asset_events") or {}).values() for e in events]
        lineage = {"airflow_run_id": context["run_id"], "reason": reason_from_trigger(params["reason"], extras)}
        with fail_without_retry_on_user_errors():
            return train(load_config(), days, lineage)

    @task
    def bootstrap_or_challenge(candidate: dict) -> str:
        from pipelines.retraining import bootstrap_or_challenge as assign

        return assign(load_config(), candidate)

    bootstrap_or_challenge(train_candidate(select_training_window()))


retrain_model()
