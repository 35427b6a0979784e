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
6. **decide_retraining**: the retraining rules, and the model's episode (one per problem: its first night opens
   it and alerts once). -> **request_retraining** (the episode's one request, when a run can train: emits the
   retraining Asset event that starts `retrain_model`), **hold_retraining** (a rule fired, but the episode
   already requested or waits for labelled data; a reminder every `retraining.reminder_partitions`
   partitions) or **keep_champion** -> **finish**.

The schedule follows the config's `cadence` (one run per partition; the run scores the partition whose
period began at the previous tick, e.g. yesterday for daily; a scheduled run's ID ends with it,
`...__ds-YYYY-MM-DD`). A night before the config's `start_date`, or before the first partition in `incoming/`,
fails at once and says so (never a silent "success" with no task run); Airflow's backfill scores past partitions
in order. A manual trigger may name `ds` (a date, `YYYY-MM-DD`), set `force_retrain`, set `accept_quarantine` to
score a quarantined night an operator has checked (its failures are kept as warnings, and it becomes usable for
training), or set `acknowledge_drift` to accept the shift up to that night as the new normal (the champion's drift
reference is rebaselined to the recent partitions, audited with the operator's name).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, PokeReturnValue, dag, task

from pipelines.core.config import PipelineConfig, model_sources
from pipelines.core.contracts import (
    AlertEvent,
    Decision,
    LabelledNight,
    NightSummary,
    RetrainRequest,
    ScoringParams,
    ScoringSummary,
    Shard,
    ShardScored,
    ValidatedPartition,
)
from pipelines.surfaces import airflow_adapter
from pipelines.surfaces.airflow_adapter import (
    EARLIEST_START,
    TaskRun,
    model_dags,
    night_timetable,
    optional_date_param,
    pipeline_task,
)
from pipelines.surfaces.notifiers import PipelineAlert


def build(dag_id: str, config: PipelineConfig) -> None:
    """Define batch_scoring for one model of the deployment."""
    retrain_request = Asset(config.retrain_asset_name)
    wait = config.partition_wait

    @dag(
        dag_id=dag_id,
        schedule=night_timetable(config.schedule),  # scheduled runs are named by their night
        start_date=EARLIEST_START,  # the config's start_date is enforced by partition_date, which says why
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["nightly-ml", f"model:{config.model.registered_name}", "scoring", "monitoring"],
        default_args={
            "owner": "ml-platform",
            "retries": 2,
            "retry_delay": timedelta(minutes=5),
            "on_failure_callback": [PipelineAlert(AlertEvent.TASK_FAILURE)],  # a quarantine is reported as such
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
            "acknowledge_drift": Param(
                False,
                type="boolean",
                title="Acknowledge the drift up to this night as the new normal",
                description="Rebaseline the champion's drift reference and validation ranges to the recent partitions "
                "(audited, with your name) and close the open drift episode; new drift beyond it still fires, and so "
                "do the performance rules.",
            ),
        },
    )
    def batch_scoring():
        # the first task: validates the trigger Params (ScoringParams) for the whole run
        @task
        @pipeline_task(ScoringParams)
        def partition_date(run: TaskRun, data_interval_start: datetime | None = None) -> str:
            from pipelines.storage import partitions

            return partitions.partition_date(run.params.ds, data_interval_start, run.config.start_date)

        # The poke itself gives up after timeout_minutes, naming the folder; the sensor's own timeout is a backstop.
        @task.sensor(
            mode="reschedule",
            retries=0,
            poke_interval=wait.poke_interval_seconds,
            timeout=wait.timeout_minutes * 60 + 2 * wait.poke_interval_seconds,
        )
        @pipeline_task()  # a missing data root fails at once instead of waiting
        def wait_for_partition(run: TaskRun, night: str) -> PokeReturnValue:
            return airflow_adapter.wait_for_partition(run, night)

        @task(retries=0)
        @pipeline_task(ScoringParams)
        def validate_partition(run: TaskRun, night: str) -> ValidatedPartition:
            from pipelines.flows import nightly

            return nightly.validate_partition(
                run.config, night, run.run_id, run.accepted_by(run.params.accept_quarantine)
            )

        @task
        @pipeline_task()
        def plan_shards(run: TaskRun, validated: ValidatedPartition) -> list[Shard]:
            from pipelines.flows import scoring

            return scoring.plan_shards(run.config, validated.ds, validated.model)

        # one mapped task per shard of a large partition, on any worker; none (skipped) for a partition one task scores
        @task(max_active_tis_per_dagrun=config.scoring.max_shards)
        @pipeline_task()
        def score_shard(run: TaskRun, shard: Shard) -> ShardScored:
            from pipelines.flows import scoring

            return scoring.score_shard(run.config, shard, run.run_id)

        # scores a small partition itself, or commits a large one from all of its shards (a skipped score_shard: none)
        @task(trigger_rule="none_failed_min_one_success")
        @pipeline_task()
        def score_partition(run: TaskRun, validated: ValidatedPartition, shards: list[ShardScored]) -> ScoringSummary:
            from pipelines.flows import scoring

            return scoring.score_partition(run.config, validated.ds, validated.model, run.run_id, list(shards or []))

        @task(on_success_callback=[PipelineAlert(AlertEvent.DATA_QUALITY)])
        @pipeline_task()
        def monitor_night(run: TaskRun, validated: ValidatedPartition, scored: ScoringSummary) -> NightSummary:
            from pipelines.flows import nightly

            return nightly.monitor_night(run.config, validated, scored, run.run_id)

        # all_done: labels of earlier nights are evaluated even when tonight's partition was refused
        @task(trigger_rule="all_done")
        @pipeline_task()
        def evaluate_labels(run: TaskRun) -> list[LabelledNight]:
            from pipelines.flows import evaluation

            return evaluation.evaluate_labels(run.config)

        @task
        @pipeline_task(ScoringParams)
        def decide_retraining(run: TaskRun, monitored: NightSummary, evaluated: list[LabelledNight]) -> Decision:
            from pipelines.flows import nightly

            return nightly.decide_retraining(
                run.config,
                monitored,
                evaluated,
                run.params.force_retrain,
                run.accepted_by(run.params.acknowledge_drift),
                run.run_id,
            )

        @task.branch
        def choose_path(decision: Decision) -> str:
            if decision.request:
                return "request_retraining"
            return "hold_retraining" if decision.retrain or decision.alert else "keep_champion"

        # the one retraining request of an episode, emitted when a run can train (other DAGs and tools listen too)
        episode_alerts = [PipelineAlert(AlertEvent.RETRAIN_DECISION), PipelineAlert(AlertEvent.EPISODE_REMINDER)]

        @task(outlets=[retrain_request], on_success_callback=episode_alerts)
        def request_retraining(decision: Decision, outlet_events=None) -> Decision:
            episode = decision.episode.id if decision.episode else None
            request = RetrainRequest(
                ds=decision.ds, reasons=decision.reasons, episode=episode, window=decision.request_window
            )
            outlet_events[retrain_request].extra = request.model_dump(mode="json")
            return decision

        # a rule fired in an open episode that already requested, or waits for labelled data: no request tonight
        @task(on_success_callback=episode_alerts)
        def hold_retraining(decision: Decision) -> Decision:
            print(decision.outcome)
            return decision

        @task
        def keep_champion(decision: Decision) -> None:
            print(f"champion v{decision.model_version} holds after {decision.ds}: {decision.outcome}")

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
        paths = [request_retraining(decision), hold_retraining(decision), keep_champion(decision)]
        choose_path(decision) >> paths >> finish(decision)

    batch_scoring()


model_dags("batch_scoring", build, model_sources())
