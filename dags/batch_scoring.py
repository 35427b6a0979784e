"""
### batch_scoring

Scores one night's partition `incoming/ds=YYYY-MM-DD` with the MLflow `champion`, monitors it, and
decides whether the model still holds.

1. **wait_for_partition**: waits (reschedule mode) until the partition has Parquet files, up to
   `partition_wait.timeout_minutes`, then fails saying which folder is missing.
2. **validate_partition**: Great Expectations gate. Broken data (unreadable files, missing or re-typed
   columns, null or duplicate ids, too few rows) is written to `quarantine/ds=.../validation.json` and the
   monitoring history, and is not scored. Data that moved (values outside the training range, unseen
   categories, more nulls) is scored and recorded as data-quality warnings (`validation.severity`).
3. **plan_shards** -> **score_shard** (mapped) -> **score_partition**: a partition above
   `scoring.shard_rows` is split into at most `scoring.max_shards` shards scored in parallel on any worker,
   and committed whole (all shards or none; a retried shard replaces its own part). A smaller partition skips
   the shards: score_partition streams it through the champion itself. Either way `predictions/ds=...` is
   replaced atomically (a rerun never duplicates rows).
4. **monitor_night**: Evidently drift and data-summary reports (`reports/ds=.../`), CBPE estimate
   of ROC AUC and accuracy, one entry in the monitoring history.
5. **evaluate_labels**: realised performance of every earlier night whose labels arrived.
6. **decide_retraining** -> **request_retraining** (emits the retraining Asset event that starts
   `retrain_model`) or **keep_champion** -> **finish**.

The schedule follows the config's `cadence` (one run per partition; the run scores the partition whose
period began at the previous tick, e.g. yesterday for daily). A night before the config's `start_date`, or before
the first partition in `incoming/`, fails at once and says so (never a silent "success" with no task run); Airflow's
backfill scores past partitions in order. A manual trigger may name
`ds` (a date, `YYYY-MM-DD`), set `force_retrain`, or set `accept_quarantine` to score a quarantined night an
operator has checked (its failures are kept as warnings, and it becomes usable for training).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task

from pipelines.core.config import load_config
from pipelines.core.contracts import (
    Decision,
    LabelledNight,
    NightSummary,
    ScoringSummary,
    Shard,
    ShardScored,
    ValidatedPartition,
)
from pipelines.surfaces.airflow_adapter import EARLIEST_START, optional_date_param
from pipelines.surfaces.notifiers import PipelineAlert

CONFIG = load_config()
RETRAIN_REQUEST = Asset(CONFIG.retrain_asset_name)
WAIT = CONFIG.partition_wait


@dag(
    dag_id="batch_scoring",
    schedule=CronDataIntervalTimetable(CONFIG.schedule, timezone="UTC"),
    start_date=EARLIEST_START,  # the config's start_date is enforced by partition_date, which says why
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightly-ml", "scoring", "monitoring"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": [PipelineAlert("task_failure")],  # a quarantine is reported as such
    },
    params={
        "ds": optional_date_param(
            "Partition date", "The night to score (YYYY-MM-DD). Empty: the run's data interval decides."
        ),
        "force_retrain": Param(False, type="boolean", title="Force retraining after this night"),
        "accept_quarantine": Param(
            False,
            type="boolean",
            title="Accept this night although it fails validation",
            description="Score the night (with ds) despite failed data checks; the failures are kept as warnings and "
            "the night becomes usable for training. Files that cannot be read as configured are never accepted.",
        ),
    },
)
def batch_scoring():
    @task
    def partition_date(params: dict, data_interval_start: datetime | None = None) -> str:
        from pipelines.storage import partitions
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return partitions.partition_date(params.get("ds"), data_interval_start, load_config().start_date)

    # The poke itself gives up after timeout_minutes, naming the folder; the sensor's own timeout is a backstop.
    @task.sensor(
        mode="reschedule",
        retries=0,
        poke_interval=WAIT.poke_interval_seconds,
        timeout=WAIT.timeout_minutes * 60 + 2 * WAIT.poke_interval_seconds,
    )
    def wait_for_partition(night: str) -> PokeReturnValue:
        from pipelines.storage import partitions
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors, give_up_waiting

        config = load_config()
        with fail_without_retry_on_user_errors():  # a missing data root fails at once instead of waiting
            present, message = partitions.wait_for_partition(config, night)
        print(message)
        if not present:
            give_up_waiting(get_current_context(), config.partition_wait.timeout_minutes, message)
        return PokeReturnValue(is_done=present, xcom_value=night)

    @task(retries=0)
    def validate_partition(night: str, params: dict) -> ValidatedPartition:
        from pipelines.flows import nightly
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        context = get_current_context()
        accepted_by = None
        if params.get("accept_quarantine"):
            accepted_by = getattr(context["dag_run"], "triggering_user_name", None) or "an operator (accept_quarantine)"
        with fail_without_retry_on_user_errors():
            return nightly.validate_partition(load_config(), night, context["run_id"], accepted_by)

    @task
    def plan_shards(validated: ValidatedPartition) -> list[Shard]:
        from pipelines.flows import scoring
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return scoring.plan_shards(load_config(), validated.ds, validated.model)

    # one mapped task per shard of a large partition, on any worker; none (skipped) for a partition one task scores
    @task(max_active_tis_per_dagrun=CONFIG.scoring.max_shards)
    def score_shard(shard: Shard) -> ShardScored:
        from pipelines.flows import scoring
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return scoring.score_shard(load_config(), shard, get_current_context()["run_id"])

    # scores a small partition itself, or commits a large one from all of its shards (a skipped score_shard: none)
    @task(trigger_rule="none_failed_min_one_success")
    def score_partition(validated: ValidatedPartition, shards: list[ShardScored]) -> ScoringSummary:
        from pipelines.flows import scoring
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return scoring.score_partition(
                load_config(), validated.ds, validated.model, get_current_context()["run_id"], list(shards or [])
            )

    @task(on_success_callback=[PipelineAlert("data_quality")])
    def monitor_night(validated: ValidatedPartition, scored: ScoringSummary) -> NightSummary:
        from pipelines.flows import nightly
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return nightly.monitor_night(load_config(), validated, scored, get_current_context()["run_id"])

    # all_done: labels of earlier nights are evaluated even when tonight's partition was refused
    @task(trigger_rule="all_done")
    def evaluate_labels() -> list[LabelledNight]:
        from pipelines.flows import evaluation
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return evaluation.evaluate_labels(load_config())

    @task
    def decide_retraining(monitored: NightSummary, evaluated: list[LabelledNight], params: dict) -> Decision:
        from pipelines.flows import nightly
        from pipelines.surfaces.airflow_adapter import fail_without_retry_on_user_errors

        with fail_without_retry_on_user_errors():
            return nightly.decide_retraining(load_config(), monitored, evaluated, bool(params["force_retrain"]))

    @task.branch
    def choose_path(decision: Decision) -> str:
        return "request_retraining" if decision.retrain else "keep_champion"

    @task(outlets=[RETRAIN_REQUEST], on_success_callback=[PipelineAlert("retrain_decision")])
    def request_retraining(decision: Decision, outlet_events=None) -> Decision:
        outlet_events[RETRAIN_REQUEST].extra = {"ds": decision.ds, "reasons": decision.reasons}
        return decision

    @task
    def keep_champion(decision: Decision) -> None:
        print(f"champion v{decision.model_version} holds after {decision.ds}")

    @task(trigger_rule="none_failed_min_one_success")
    def finish(decision: Decision) -> Decision:
        return decision

    night = partition_date()
    arrived = wait_for_partition(night)
    validated = validate_partition(arrived)
    scored = score_partition(validated, score_shard.expand(shard=plan_shards(validated)))
    monitored = monitor_night(validated, scored)
    evaluated = evaluate_labels()
    monitored >> evaluated  # labels are read after tonight's night is in the history
    decision = decide_retraining(monitored, evaluated)
    paths = [request_retraining(decision), keep_champion(decision)]
    choose_path(decision) >> paths >> finish(decision)


batch_scoring()
