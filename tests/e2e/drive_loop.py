"""The whole model loop through real Airflow DAG runs in one process: drift, decision, retraining, gate, promotion,
the next night on the new champion, and a rollback.

Usage: drive_loop.py OUT_DIR BOOTSTRAP_END FIRST_NIGHT LAST_NIGHT ROWS. Labels land every night, label_delay_days
late. A night whose run emitted a retraining request (an Asset event) is followed by the retrain_model run that
the scheduler would start on that event; `dag.test` cannot pass triggering events, so the driver hands the
event's reasons over as the run's `reason`. Writes OUT_DIR/outcomes.json.
"""

import json
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from harness.runner import retrain_params, retraining_requests, run_dag
from harness.sample_data import DriftSpec, write_day
from pipelines.core.config import load_config
from pipelines.core.paths import PREDICTIONS
from pipelines.storage.partitions import partition_dir

out_dir, bootstrap_end = Path(sys.argv[1]), sys.argv[2]
first, last, rows = date.fromisoformat(sys.argv[3]), date.fromisoformat(sys.argv[4]), int(sys.argv[5])
drift = DriftSpec(start=date.fromisoformat(sys.argv[6]), covariate=True, concept=True)
config = load_config()


def night_run(night: date, conf: dict | None = None) -> dict:
    logical = None if conf else datetime.combine(night + timedelta(days=1), time(2, 0), tzinfo=UTC)
    return asdict(run_dag("batch_scoring", logical, conf))


outcomes = {"bootstrap": asdict(run_dag("retrain_model", None, {"window_end": bootstrap_end, "reason": "bootstrap"}))}
night = first
while night <= last:
    write_day(
        config.data_root,
        night - timedelta(days=config.label_delay_partitions),
        rows,
        7,
        drift,
        with_labels=True,
        with_features=False,
    )
    outcome = night_run(night)
    outcomes[night.isoformat()] = outcome
    requests = retraining_requests(outcome["run_id"])
    if requests:
        outcomes[f"retrain after {night}"] = asdict(run_dag("retrain_model", None, retrain_params(requests)))
    night += timedelta(days=1)

outcomes["last_night_versions"] = sorted(
    set(pd.read_parquet(partition_dir(config.data_root, PREDICTIONS, last))["model_version"])
)
outcomes["rollback_bad"] = asdict(run_dag("rollback_model", None, {"target_version": "99", "reason": "typo"}))
outcomes["rollback"] = asdict(run_dag("rollback_model", None, {"reason": "loop test: undo the promotion"}))
outcomes["rerun_after_rollback"] = night_run(last, {"ds": last.isoformat()})
(out_dir / "outcomes.json").write_text(json.dumps(outcomes, default=str, indent=2))
