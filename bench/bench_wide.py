"""Width benchmark: the first training and one whole night through real Airflow at 15, 100, 300 and 1,000 features.

    uv run python bench/bench_wide.py [--features 15 100 300 1000] [--folder /tmp/bench-wide] [--busy-loops 0]

For each width, a generated lake (not the demo's data): `--train-days` labelled days and one quiet night, the
numeric features of mixed shapes (normal, counts, skewed, bounded; float32 as wide tables usually are) plus 4
categorical ones (10 at 1,000 features), a binary target driven by 20 of the columns. Rows per partition: 5,000,
and 50,000 at 1,000 features (the issue's shapes). Each width:

1. the first training (select the window, train, register, compile: what `retrain_model` runs on a fresh store) in
   its own process: seconds and peak RSS (VmHWM);
2. `airflow dags test batch_scoring` for the quiet night, sampling the process tree's RSS every 50 ms: each task's
   seconds and the peak RSS seen while it ran (the tasks share the `dags test` process, so a peak carries what earlier
   tasks left allocated);
3. `validate_partition`, `score_partition` and `monitor_night` again, each alone in a process of its own as a
   worker runs a task (what it needs runs first, then the peak counter is reset): seconds and peak RSS ("task MB"
   in the table is the largest of the three);
4. the night's report folder's bytes, and how many feature columns were flagged as drifted on that quiet night.

Prints one table row per width and the 300 / 15 night ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_night import _Sampler, _tasks, wait_sampled  # noqa: E402  (the repository on the path first)
from bench.bench_scoring import busy  # noqa: E402
from harness.topology import airflow_env  # noqa: E402

FIRST_DAY = date(2026, 9, 1)


def _shape(width: int) -> tuple[int, int, int]:
    """Numeric features, categorical features and rows a night of a width."""
    categorical = 10 if width >= 1_000 else 4
    numeric = width if width >= 1_000 else width - categorical
    return numeric, categorical, 50_000 if width >= 1_000 else 5_000


def _partition(day: date, numeric: int, categorical: int, rows: int, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng([seed, day.toordinal()])
    columns: dict[str, object] = {"id": pa.array([f"{day:%Y%m%d}-{i}" for i in range(rows)])}
    signal = np.zeros(rows)
    for j in range(numeric):
        shape = j % 4
        if shape == 0:
            values = rng.normal(0, 1, rows)
        elif shape == 1:
            values = rng.poisson(3, rows).astype(float)
        elif shape == 2:
            values = rng.gamma(2, 2, rows)
        else:
            values = rng.uniform(0, 1, rows)
        if j < 20:
            signal += (values - values.mean()) / (values.std() + 1e-9) * (0.6 if j % 2 else -0.4)
        columns[f"f{j}"] = pa.array(values.astype(np.float32))
    levels = np.array(["a", "b", "c", "d", "e"])
    for j in range(categorical):
        picked = rng.choice(5, rows, p=[0.4, 0.3, 0.15, 0.1, 0.05])
        if j == 0:
            signal += np.where(picked < 2, 0.5, -0.5)
        columns[f"c{j}"] = pa.array(levels[picked])
    probability = 1 / (1 + np.exp(-(signal / np.sqrt(20) * 2 - 1.2)))
    target = (rng.random(rows) < probability).astype(np.int8)
    return pa.table(columns), pa.table({"id": columns["id"], "y": pa.array(target)})


def prepare(folder: Path, width: int, train_days: int) -> tuple[Path, date]:
    """Write the lake and the config of a width (reused when it is there); return the config and the night."""
    import pyarrow.parquet as pq
    import yaml

    from pipelines.core.config import DEFAULT_CONFIG

    numeric, categorical, rows = _shape(width)
    night = FIRST_DAY + timedelta(days=train_days)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(
        data_root=str(folder / "data"),
        id_column="id",
        target="y",
        timestamp_column=None,
        features={"numeric": [f"f{j}" for j in range(numeric)], "categorical": [f"c{j}" for j in range(categorical)]},
        label_delay_partitions=0,
    )
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    raw["model"]["registered_name"] = f"wide_{width}"
    raw["mlflow"]["experiment"] = f"wide_{width}"
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    for offset in range(train_days + 1):
        day = FIRST_DAY + timedelta(days=offset)
        target = folder / "data" / "incoming" / f"ds={day}" / "part-0000.parquet"
        if target.exists():
            continue
        features, labels = _partition(day, numeric, categorical, rows, seed=width)
        for kind, table in (("incoming", features), ("labels", labels)):
            if kind == "labels" and day == night:
                continue
            out = folder / "data" / kind / f"ds={day}" / "part-0000.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out.with_suffix(".tmp"), row_group_size=65_536)
            out.with_suffix(".tmp").rename(out)
    return path, night


def _train_worker(config_path: str) -> None:
    from pipelines.core.config import load_config
    from pipelines.flows import retraining
    from pipelines.governance import registry

    config = load_config(config_path)
    registry.init_store(config)
    started = time.perf_counter()
    window = retraining.select_training_window(config)
    retraining.bootstrap_or_challenge(config, retraining.train_candidate(config, window, {"reason": "bench"}))
    seconds = time.perf_counter() - started
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": int(hwm.split()[1]) / 1024}))


def _stage_worker(stage: str, config_path: str, ds: str) -> None:
    """One task of the night in a process of its own, as a worker runs it: what it needs first (the validation,
    the scoring) runs, the freed memory is returned and the peak counter reset (/proc/self/clear_refs), then the
    task runs and its peak RSS (VmHWM) is printed: the process's imports and what it holds count, as in a worker."""
    from pipelines.core.config import load_config
    from pipelines.core.threads import return_freed_memory
    from pipelines.flows import nightly, scoring

    config = load_config(config_path)
    run = f"bench-{stage}"

    def validate():
        return nightly.validate_partition(config, ds, run)

    def score(validated):
        return scoring.score_partition(config, ds, validated.model, run)

    validated = validate() if stage != "validate_partition" else None
    scored = score(validated) if stage == "monitor_night" else None
    return_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    if stage == "validate_partition":
        validate()
    elif stage == "score_partition":
        score(validated)
    else:
        nightly.monitor_night(config, validated, scored, run)
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": int(hwm.split()[1]) / 1024}))


def _isolated(config_path: Path, night: date, env: dict[str, str]) -> dict[str, dict]:
    found = {}
    for stage in ("validate_partition", "score_partition", "monitor_night"):
        proc = subprocess.run(
            [sys.executable, __file__, "--stage-worker", stage, str(config_path), str(night)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            raise SystemExit(f"{stage} failed: {proc.stderr[-3000:]}")
        found[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def _first_training(config_path: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--train-worker", str(config_path)], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"training failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _night(folder: Path, config_path: Path, night: date, env: dict[str, str]) -> tuple[list, _Sampler]:
    home = folder / "airflow"
    shutil.rmtree(home, ignore_errors=True)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
    )
    if migrate.returncode:
        raise SystemExit(migrate.stderr[-3000:])
    shutil.rmtree(folder / "data" / "reports" / f"ds={night}", ignore_errors=True)
    with (folder / "dags-test.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", "batch_scoring", "-c", json.dumps({"ds": str(night)})],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        code, sampler = wait_sampled(proc)
    if code:
        raise SystemExit(f"the night failed (exit {code}); see {folder / 'dags-test.log'}")
    return _tasks(home / "airflow.db"), sampler


def measure(root: Path, width: int, train_days: int) -> dict:
    folder = root / f"w{width}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    config_path, night = prepare(folder, width, train_days)
    print(f"[{width} features] data ready in {time.monotonic() - started:.0f} s ({_shape(width)[2]:,} rows a night)")
    env = airflow_env(folder / "airflow", config_path, "bench-only-audit-key")
    for stale in ("mlflow", "data/monitoring", "data/models"):  # a first training: a fresh store and history
        shutil.rmtree(folder / stale, ignore_errors=True)
    training = _first_training(config_path, env)
    print(f"[{width} features] first training {training['seconds']:.1f} s, peak RSS {training['peak_rss_mb']:,.0f} MB")
    tasks, sampler = _night(folder, config_path, night, env)
    reports = folder / "data" / "reports" / f"ds={night}"
    report_bytes = sum(p.stat().st_size for p in reports.rglob("*") if p.is_file())
    summary = json.loads((reports / "summary.json").read_text())
    seconds = {task: end - start for task, start, end, _ in tasks}
    peaks = {task: sampler.peak(start, end) for task, start, end, _ in tasks}
    night_seconds = max(end for _, _, end, _ in tasks) - min(start for _, start, _, _ in tasks)
    for task, start, end, state in tasks:
        print(f"    {task:<22} {state:<8} {end - start:>7.2f} s {sampler.peak(start, end):>8,.0f} MB")
    isolated = _isolated(config_path, night, env)
    for stage, found in isolated.items():
        print(
            f"    {stage:<22} alone in its own process: {found['seconds']:.2f} s, peak RSS {found['peak_rss_mb']:,.0f} MB"
        )
    return {
        "width": width,
        "rows": _shape(width)[2],
        "training_s": training["seconds"],
        "training_mb": training["peak_rss_mb"],
        "night_s": night_seconds,
        "night_mb": max((mb for _, mb in sampler.samples), default=0.0),
        "validate_s": seconds.get("validate_partition", float("nan")),
        "score_s": seconds.get("score_partition", float("nan")),
        "monitor_s": seconds.get("monitor_night", float("nan")),
        "monitor_mb": peaks.get("monitor_night", float("nan")),
        "task_mb": max(found["peak_rss_mb"] for found in isolated.values()),
        "isolated": isolated,
        "report_mb": report_bytes / 2**20,
        "flagged": len(summary["drifted_columns"]),
        "features": _shape(width)[0] + _shape(width)[1],
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--train-worker":
        _train_worker(sys.argv[2])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--stage-worker":
        _stage_worker(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, nargs="+", default=[15, 100, 300, 1000])
    parser.add_argument("--train-days", type=int, default=6)
    parser.add_argument("--folder", help="work folder (default: a temporary one; its data is reused)")
    parser.add_argument("--busy-loops", type=int, default=0, help="CPU-bound loops to run beside each measurement")
    args = parser.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="bench-wide-"))
    results = []
    with busy(args.busy_loops):
        for width in args.features:
            results.append(measure(root, width, args.train_days))
    print(
        f"\n{'features':>8} {'rows':>7} {'train s':>8} {'train MB':>9} {'night s':>8} {'night MB':>9} "
        f"{'validate':>9} {'score':>7} {'monitor':>8} {'task MB':>8} {'reports':>9} {'flagged':>8}"
    )
    for r in results:
        print(
            f"{r['width']:>8} {r['rows']:>7,} {r['training_s']:>8.1f} {r['training_mb']:>9,.0f} {r['night_s']:>8.1f} "
            f"{r['night_mb']:>9,.0f} {r['validate_s']:>9.2f} {r['score_s']:>7.2f} {r['monitor_s']:>8.2f} "
            f"{r['task_mb']:>8,.0f} {r['report_mb']:>7.2f}MB {r['flagged']:>4} of {r['features']}"
        )
    by_width = {r["width"]: r for r in results}
    if 15 in by_width and 300 in by_width:
        ratio = by_width[300]["night_s"] / by_width[15]["night_s"]
        print(f"\nnight at 300 features / at 15 features (5,000 rows each, same run): {ratio:.2f} (target <= 3)")
    if 1000 in by_width:
        r = by_width[1000]
        print(
            f"1,000 features x 50,000 rows: night {r['night_s']:.1f} s (target < 60); largest task alone in its process "
            f"{r['task_mb']:,.0f} MB (target: no task above 1 GB; all tasks in one `dags test` process "
            f"{r['night_mb']:,.0f} MB); first training {r['training_s']:.0f} s, {r['training_mb']:,.0f} MB "
            "(targets < 300 s, < 2 GB)"
        )
    print(f"work folder: {root}")


if __name__ == "__main__":
    main()
