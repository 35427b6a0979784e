"""Drive a dataset shaped unlike the demo through real Airflow DAG runs in one process (see test_any_dataset.py).

Usage: drive_datasets.py OUT_DIR SCENARIO. The config (PIPELINE_CONFIG) holds the dataset's cadence; partition
dates follow it. Labels land `label_delay_partitions` late, night by night. A night whose run emitted a retraining
request is followed by the retrain_model run the scheduler would start on it. Writes OUT_DIR/outcomes.json.
"""

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, time
from pathlib import Path

import pyarrow.parquet as pq

from harness import example_data
from harness.runner import retrain_params, retraining_requests, run_dag
from pipelines.core.cadence import shift
from pipelines.core.config import load_config
from pipelines.core.paths import INCOMING
from pipelines.storage.partitions import partition_dir

out_dir, scenario = Path(sys.argv[1]), json.loads(sys.argv[2])
config = load_config()
dates = [
    date_
    for date_ in (
        shift(config, datetime.fromisoformat(scenario["first"]).date(), i) for i in range(scenario["partitions"])
    )
]
shape = example_data.Shape(shift_at=scenario.get("shift_at"), break_at=scenario.get("break_at"))
rows, bootstrap_end, first_night = scenario["rows"], scenario["bootstrap_end"], scenario["first_night"]
example_data.generate(config.data_root, dates, rows, shape=shape, labelled=bootstrap_end + 1)
if "tiny" in scenario:  # too few rows: a check that quarantines by default, which an operator may accept
    file = partition_dir(config.data_root, INCOMING, dates[scenario["tiny"]]) / "part-0.parquet"
    pq.write_table(pq.read_table(file).slice(0, 30), file)


def night_run(index: int, conf: dict | None = None) -> dict:
    """Run batch_scoring for partition `index` as the scheduler would (its logical date one tick after the partition)."""
    logical = None if conf else datetime.combine(shift(config, dates[index], 1), time(2, 0), tzinfo=UTC)
    return asdict(run_dag("batch_scoring", logical, conf))


outcomes = {
    "dates": [d.isoformat() for d in dates],
    "bootstrap": asdict(
        run_dag("retrain_model", None, {"window_end": dates[bootstrap_end].isoformat(), "reason": "bootstrap"})
    ),
}
for index in range(first_night, len(dates)):
    delayed = index - config.label_delay_partitions
    if delayed > bootstrap_end:
        example_data.write_labels(config.data_root, dates, delayed, rows, shape=shape)
    ds = dates[index].isoformat()
    outcomes[ds] = night_run(index)
    if scenario.get("tiny") == index:
        outcomes[f"accept {ds}"] = night_run(index, {"ds": ds, "accept_quarantine": True})
    requests = retraining_requests(outcomes[f"accept {ds}" if f"accept {ds}" in outcomes else ds]["run_id"])
    if requests:
        outcomes[f"retrain after {ds}"] = asdict(run_dag("retrain_model", None, retrain_params(requests)))
(out_dir / "outcomes.json").write_text(json.dumps(outcomes, default=str, indent=2))
