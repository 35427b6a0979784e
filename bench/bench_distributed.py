"""Distributed bench: one large partition scored on the native Celery topology with one worker, then two.

    uv run python bench/bench_distributed.py --rows 4000000 [--folder /tmp/bench-dist] [--small-rows 2000]

Starts harness.topology (PostgreSQL, Redis, moto S3 behind an MLflow tracking server, the Airflow components and
N Celery workers of concurrency 1) twice, N = 1 and N = 2, each time on fresh databases: registers a compiled
champion through the tracking server, then triggers `batch_scoring` for the large night through the REST API
(the partition is above `scoring.shard_rows`, so it is scored as 2 mapped shards; `scoring.threads: 1`).
Prints, per setting: the scoring wall time (first shard's start to the commit's end) and rows/s, the ratio of
the two, and where the time goes (per shard: queued -> running, model load, object-store reads, predict, writes;
the commit; the rest of the night). The data root is the topology's bucket (moto on loopback). Then the extra wall time of a demo-sized night on the 2-worker topology against the same night
embedded (`airflow dags test`, bench_night.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_scoring import NIGHT, TRAIN_START  # noqa: E402  (the repository on the path first)
from harness.topology import distributed, wait_for_run  # noqa: E402

SMALL_NIGHT = NIGHT.replace(day=NIGHT.day + 2)
AUDIT_KEY = os.environ.setdefault("AIRFLOW_VAR_PIPELINE_AUDIT_KEY", "bench-only-audit-key")  # this process too


def _config(folder: Path) -> Path:
    from pipelines.core.config import DEFAULT_CONFIG

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data_root"] = str(folder / "data")
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    # two shards of the large night, one native thread each: one per worker core
    raw["scoring"].update(threads=1, shard_rows=1_000_000, max_shards=2)
    # the scheduler's own run for yesterday finds no partition: let it give up at once instead of queueing ours
    raw["partition_wait"] = {"timeout_minutes": 0.02, "poke_interval_seconds": 1}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _data(folder: Path, rows: int, small_rows: int) -> None:
    from harness import sample_data
    from pipelines.core.config import load_config

    config = load_config(_config(folder))
    if not (config.data_root / "incoming" / f"ds={NIGHT}").exists():
        print(f"generating 14 training days and a {rows:,}-row night in {config.data_root}")
        sample_data.generate(config.data_root, TRAIN_START, 14, 20_000, label_delay_days=0)
        sample_data.write_day(config.data_root, NIGHT, rows, 11, sample_data.DriftSpec(), with_labels=False)
        sample_data.write_day(config.data_root, SMALL_NIGHT, small_rows, 12, sample_data.DriftSpec(), with_labels=False)


def _upload(local: Path, config) -> None:
    """Copy the generated partitions (made once, on disk) into the topology's fresh bucket, its data root."""
    from pyarrow import fs

    started = time.monotonic()
    root = config.data_root
    fs.copy_files(str(local), root.arrow_path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=root.fs)
    size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    print(f"  uploaded {size / 1e6:,.0f} MB of partitions to {root} in {time.monotonic() - started:.1f} s")


def _bootstrap(config, local: Path) -> None:
    from pipelines.flows import retraining
    from pipelines.governance import registry

    _upload(local, config)
    registry.init_store(config)
    window = retraining.select_training_window(config)
    started = time.monotonic()
    retraining.bootstrap_or_challenge(config, retraining.train_candidate(config, window, {"reason": "bench"}), "bench")
    print(
        f"  champion trained, compiled and registered through the tracking server in {time.monotonic() - started:.0f} s"
    )


def _stamp(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else float("nan")


def _night(topology, ds: str) -> tuple[dict, list[dict]]:
    response = httpx.post(
        f"{topology.base}/api/v2/dags/batch_scoring/dagRuns",
        headers=topology.headers,
        json={"logical_date": None, "conf": {"ds": ds}},
        timeout=30,
    )
    response.raise_for_status()
    run_id = response.json()["dag_run_id"]
    run = wait_for_run(topology, "batch_scoring", lambda r: r["dag_run_id"] == run_id, seconds=1800)
    if run["state"] != "success":
        raise SystemExit(f"the night {ds} failed: {run}; logs under {topology.logs['airflow-scheduler'].parent}")
    tis = httpx.get(
        f"{topology.base}/api/v2/dags/batch_scoring/dagRuns/{run_id}/taskInstances",
        headers=topology.headers,
        params={"limit": 100},
        timeout=30,
    ).json()["task_instances"]
    return run, tis


def _shard_lines(folder: Path) -> list[tuple[float, ...]]:
    """(model load, scoring, object-store reads, predict, writes and publish) seconds of every shard, from the
    workers' task logs."""
    found = []
    for log in folder.glob("airflow-worker-*/airflow/logs/**/task_id=score_shard/**/*.log"):
        text = log.read_text(errors="replace")
        parts = re.findall(r"reading ([0-9.]+) s, predicting ([0-9.]+) s, writing and publishing ([0-9.]+) s", text)
        for n, match in enumerate(re.finditer(r"model load ([0-9.]+) s, scoring ([0-9.]+) s", text)):
            io = tuple(float(x) for x in parts[n]) if n < len(parts) else (float("nan"),) * 3
            found.append((float(match.group(1)), float(match.group(2)), *io))
    return found


def _measure(base: Path, workers: int, rows: int) -> dict:
    folder = base / f"workers-{workers}"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir()
    print(f"\n== {workers} worker{'s' if workers > 1 else ''} ==")
    config_path = base / "pipeline.yaml"
    prepare = lambda config: _bootstrap(config, base / "data")  # noqa: E731
    with distributed(folder, config_path, AUDIT_KEY, prepare, workers=workers, worker_concurrency=1) as topology:
        run, tis = _night(topology, NIGHT.isoformat())
        loads = _shard_lines(folder)
        small = _night(topology, SMALL_NIGHT.isoformat())[1] if workers == 2 else None
    by_task: dict[str, list[dict]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    shards = sorted(by_task["score_shard"], key=lambda t: t["map_index"])
    commit = by_task["score_partition"][0]
    scoring_wall = _stamp(commit["end_date"]) - min(_stamp(t["start_date"]) for t in shards)
    night = _stamp(run["end_date"]) - _stamp(run["start_date"])
    print(f"  {rows:,} rows in {len(shards)} shards; scoring (first shard's start to the commit's end) "
          f"{scoring_wall:.1f} s = {rows / scoring_wall:,.0f} rows/s; the whole night {night:.1f} s")  # fmt: skip
    for ti in shards:
        waited = _stamp(ti["start_date"]) - _stamp(ti["queued_when"])
        print(
            f"  shard {ti['map_index']}: on {ti['hostname']}, queued -> running {waited:.1f} s, "
            f"ran {ti['duration']:.1f} s"
        )
    for load, score, read, predict, write in loads:
        print(
            f"    inside a shard: model load and verification {load:.1f} s, read + predict + write {score:.1f} s "
            f"(reading from the object store {read:.1f} s, predict {predict:.1f} s, writing to it and publishing "
            f"{write:.1f} s)"
        )
    if not loads:
        print("    (no shard timings found in the workers' task logs)")
    print(f"  commit (score_partition): {commit['duration']:.1f} s")
    rest = {
        t: sum(i["duration"] or 0 for i in v) for t, v in by_task.items() if t not in ("score_shard", "score_partition")
    }
    print("  other tasks: " + ", ".join(f"{t} {s:.1f} s" for t, s in sorted(rest.items(), key=lambda kv: -kv[1]) if s))
    return {"rows_per_s": rows / scoring_wall, "small_night": _night_seconds(small) if small else None}


def _night_seconds(tis: list[dict]) -> float:
    """First task's start to last task's end (as bench_night measures the embedded night)."""
    ran = [t for t in tis if t["start_date"]]
    return max(_stamp(t["end_date"]) for t in ran) - min(_stamp(t["start_date"]) for t in ran)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--small-rows", type=int, default=2_000, help="the demo-sized night (distributed vs embedded)")
    parser.add_argument("--folder", help="work folder (default: a temporary one; its data is reused)")
    args = parser.parse_args()
    base = Path(args.folder or tempfile.mkdtemp(prefix="bench-dist-"))
    base.mkdir(parents=True, exist_ok=True)
    _data(base, args.rows, args.small_rows)
    one = _measure(base, 1, args.rows)
    two = _measure(base, 2, args.rows)
    print(
        f"\nrows/s with 2 workers / with 1: {two['rows_per_s'] / one['rows_per_s']:.2f} (ideal on this 2-core machine: ~2)"
    )
    embedded = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_night.py"), "--rows", str(args.small_rows),
         "--folder", str(base / "embedded")],
        capture_output=True, text=True,
    )  # fmt: skip
    match = re.search(r"night \(first task's start to last task's end\): ([0-9.]+) s", embedded.stdout)
    if match and two["small_night"] is not None:
        ours = two["small_night"]
        print(
            f"demo-sized night ({args.small_rows:,} rows, first task's start to last task's end): distributed {ours:.1f} s "
            f"(2 workers), "
            f"embedded {float(match.group(1)):.1f} s (airflow dags test); extra wall time {ours - float(match.group(1)):.1f} s"
        )
    else:
        print(f"embedded night not measured: {embedded.stdout[-1500:]}{embedded.stderr[-1500:]}")


if __name__ == "__main__":
    main()
