"""Hostile-values benchmark: peak RSS of each night step on partitions whose values, not rows, are huge.

    uv run python bench/bench_values.py [--folder /tmp/bench-values] [--big-rows 2000000]

Two partitions from the hostile round (#21 item 2), each a real night of the default config's columns:
- `long_strings`: 5,000 rows whose categorical column `loan_purpose` holds 200 kB strings (zstd, row groups of
  500 rows: a few hundred kB on disk, about 1 GB of values);
- `huge_dictionary`: --big-rows rows whose `loan_purpose` is a dictionary column with one distinct value per row.

Every step (validate_partition, score_partition, monitor_night) runs in its own process, as an Airflow task
does, and its peak RSS (VmHWM, imports included) and seconds are printed. The target: no step above 1 GB.
The lake (14 training days, a champion) is prepared once under --folder and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_scoring import _peak_rss_mb, prepare  # noqa: E402  (the repository on the path first)

CASES = {"long_strings": date(2026, 9, 22), "huge_dictionary": date(2026, 9, 23)}
STEPS = ("validate_partition", "score_partition", "monitor_night")
COLUMN = "loan_purpose"


def write_case(config_path: Path, case: str, big_rows: int) -> None:
    """Write the hostile partition of `case` over the generated night of its date."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness import sample_data
    from pipelines.core.config import load_config

    config = load_config(config_path)
    ds = CASES[case]
    rows = 5000 if case == "long_strings" else big_rows
    sample_data.write_day(config.data_root, ds, rows, 11, sample_data.DriftSpec(), with_labels=False)
    folder = config.data_root / "incoming" / f"ds={ds}"
    (file,) = sorted(folder.glob("*.parquet"))
    table = pq.read_table(file)
    if case == "long_strings":
        values = pa.array([f"{i:06d}" + "x" * 200_000 for i in range(rows)])
        table = table.set_column(table.schema.get_field_index(COLUMN), COLUMN, values)
        pq.write_table(table, file, compression="zstd", row_group_size=500)
    else:
        values = pa.DictionaryArray.from_arrays(pa.array(range(rows), pa.int32()), [f"c{i}" for i in range(rows)])
        table = table.set_column(table.schema.get_field_index(COLUMN), COLUMN, values)
        pq.write_table(table, file)
    print(f"{case}: wrote {rows:,} rows, {file.stat().st_size / 2**20:.1f} MB on disk")


def step(config_path: Path, name: str, ds: str, inputs: Path) -> None:
    """Run one night step in this process and print its result and peak RSS as JSON."""
    from pipelines.core.config import load_config
    from pipelines.core.contracts import ScoringSummary, ValidatedPartition
    from pipelines.core.errors import PipelineError
    from pipelines.flows import nightly, scoring

    config = load_config(config_path)
    started = time.monotonic()
    result: dict = {}
    try:
        if name == "validate_partition":
            value = nightly.validate_partition(config, ds, "bench")
            (inputs / "validated.json").write_text(value.model_dump_json())
            result["warnings"] = [w[:200] for w in value.warnings]
        elif name == "score_partition":
            validated = ValidatedPartition.model_validate_json((inputs / "validated.json").read_text())
            value = scoring.score_partition(config, ds, validated.model, "bench")
            (inputs / "scored.json").write_text(value.model_dump_json())
        else:
            validated = ValidatedPartition.model_validate_json((inputs / "validated.json").read_text())
            scored = ScoringSummary.model_validate_json((inputs / "scored.json").read_text())
            value = nightly.monitor_night(config, validated, scored, "bench")
            result["drifted"] = value.drifted_columns
        result["outcome"] = "ok"
    except PipelineError as exc:
        result["outcome"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    result |= {"seconds": time.monotonic() - started, "peak_rss_mb": _peak_rss_mb()}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/bench-values")
    parser.add_argument("--big-rows", type=int, default=2_000_000)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--ds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    if args.step:
        step(folder / "pipeline.yaml", args.step, args.ds, folder / "inputs" / args.ds)
        return
    folder.mkdir(parents=True, exist_ok=True)
    config_path, _ = prepare(folder, {date(2026, 9, 20): 1000})
    env = os.environ | {"GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_ENABLE_TELEMETRY": "false"}
    for case, ds in CASES.items():
        if args.case not in ("all", case):
            continue
        write_case(config_path, case, args.big_rows)
        (folder / "inputs" / str(ds)).mkdir(parents=True, exist_ok=True)
        for name in STEPS:
            out = subprocess.run(
                [sys.executable, __file__, "--folder", str(folder), "--step", name, "--ds", str(ds)],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode != 0:
                print(f"{case:<16} {name:<20} exited {out.returncode}: {out.stderr.strip()[-400:]}")
                break
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{case:<16} {name:<20} {result['seconds']:7.1f} s  peak {result['peak_rss_mb']:7.0f} MB  "
                f"{result['outcome']}  {json.dumps({k: v for k, v in result.items() if k in ('warnings', 'drifted')})[:300]}"
            )
            if result["outcome"] != "ok":
                break


if __name__ == "__main__":
    main()
