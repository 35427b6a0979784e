"""
### batch_scoring

Scores one night's partition `incoming/ds=YYYY-MM-DD` with the MLflow `champion` model.

1. **wait_for_partition**: waits (reschedule mode) until the partition has Parquet files, up to
   `partition_wait.timeout_minutes` from the pipeline config, then fails saying which folder is missing.
2. **validate_partition**: Great Expectations gate. A failing partition is written to
   `quarantine/ds=.../validation.json` with the reason and is not scored; the task fails without retry.
3. **score_partition**: streams the partition through the champion and atomically replaces
   `predictions/ds=...` (a rerun never duplicates rows).

The run's data interval picks `ds` (the nightly run at 02:00 scores the day before). A manual
trigger may name `ds` (a date, `YYYY-MM-DD`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task

from pipelines.config import load_config

CONFIG = load_config()


@dag(
    dag_id="batch_scoring",
    schedule=CronDataIntervalTimetable(CONFIG.schedule, timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightly-ml", "scoring"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            title="Partition date",
            description="The night to score (YYYY-MM-DD). Empty: the run's data interval decides.",
        ),
        "force_retrain": Param(False, type="boolean", title="Force retraining after this night"),
    },
)
def batch_scoring():
    @task
    def partition_date(params: dict, data_interval_start: datetime | None = None) -> str:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.lake import night_for_run

        with fail_without_retry_on_user_errors():
            return night_for_run(params.get("ds"), data_interval_start)

    @task.sensor(
        mode="reschedule",
        retries=0,
        poke_interval=CONFIG.partition_wait.poke_interval_seconds,
        timeout=CONFIG.partition_wait.timeout_minutes * 60,
    )
    def wait_for_partition(night: str) -> PokeReturnValue:
        from pipelines.lake import describe_arrival

        present, message = describe_arrival(load_config(), night)
        print(message)
        return PokeReturnValue(is_done=present)

    @task(retries=0)
    def validate_partition(night: str) -> dict:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.validation import validate_against_champion

        with fail_without_retry_on_user_errors():
            return validate_against_champion(load_config(), night, get_current_context()["run_id"])

    @task
    def score_partition(night: str) -> dict:
        from pipelines.airflow_adapter import fail_without_retry_on_user_errors
        from pipelines.scoring import score_partition as score

        with fail_without_retry_on_user_errors():
            return score(load_config(), night, get_current_context()["run_id"]).as_dict()

    night = partition_date()
    wait_for_partition(night) >> validate_partition(night) >> score_partition(night)


batch_scoring()
