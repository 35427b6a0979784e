"""Night benchmark: one whole `batch_scoring` night through real Airflow (`airflow dags test`) on a big partition.

    uv run python bench/bench_night.py --rows 2000000 [--folder /tmp/bench-night] [--busy-loops 0]

Prepares a lake (14 training days, a champion trained, registered and compiled as `retrain_model` does, and
one night of --rows rows), migrates a fresh Airflow SQLite DB, then runs `airflow dags test batch_scoring` for
that night while sampling the process tree's RSS every 50 ms. Prints each task's seconds (from Airflow's task
instances) and the peak RSS seen while it ran (the task runs inside the `dags test` process: a peak carries
what earlier tasks left allocated), the night's wall time (first task's start to last task's end), and in the
same run the naive scoring of the same partition (bench_scoring's baseline: whole file into pandas, scikit-learn
`predict_proba`, one write; its clock starts after its model is loaded) and the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_scoring import NIGHT, busy, prepare  # noqa: E402  (the repository on the path first)
from harness.topology import airflow_env  # noqa: E402


def _env(folder: Path, config_path: Path) -> dict[str, str]:
    return airflow_env(folder / "airflow", config_path, "bench-only-audit-key")


class _Sampler(threading.Thread):
    """Samples the RSS of a process and its children every 50 ms, with the time of each sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.samples, self.stop = psutil.Process(pid), [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                break
            self.samples.append((time.time(), rss / 2**20))
            time.sleep(0.05)

    def peak(self, start: float, end: float) -> float:
        seen = [mb for t, mb in self.samples if start - 0.05 <= t <= end + 0.05]
        return max(seen, default=float("nan"))


def wait_sampled(proc: subprocess.Popen) -> tuple[int, _Sampler]:
    """Wait for a process while sampling its tree's RSS; return its exit status and the samples."""
    sampler = _Sampler(proc.pid)
    sampler.start()
    code = proc.wait()
    sampler.stop.set()
    sampler.join()
    return code, sampler


def _tasks(airflow_db: Path) -> list[tuple[str, float, float, str]]:
    with sqlite3.connect(airflow_db) as db:
        rows = db.execute(
            "SELECT task_id, start_date, end_date, state FROM task_instance WHERE dag_id = 'batch_scoring' "
            "AND start_date IS NOT NULL ORDER BY start_date"
        ).fetchall()

    def stamp(text: str) -> float:
        return (
            datetime.fromisoformat(text).timestamp()
            if "+" in text[10:]
            else datetime.fromisoformat(text + "+00:00").timestamp()
        )

    return [(task, stamp(start), stamp(end or start), state) for task, start, end, state in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--folder", help="work folder (default: a temporary one; its data is reused)")
    parser.add_argument("--busy-loops", type=int, default=0, help="CPU-bound loops to run beside the night")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-night-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path, naive_spec = prepare(folder, {NIGHT: args.rows})
    tracking_uri = naive_spec.pop("tracking_uri")
    env = _env(folder, config_path)
    home = folder / "airflow"
    if home.exists():
        import shutil

        shutil.rmtree(home)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
    )
    if migrate.returncode:
        raise SystemExit(migrate.stderr[-3000:])
    with busy(args.busy_loops):
        print(f"running batch_scoring for ds={NIGHT} ({args.rows:,} rows) with airflow dags test ...")
        started = time.time()
        log = (folder / "dags-test.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow",
                "dags",
                "test",
                "batch_scoring",
                "-c",
                json.dumps({"ds": NIGHT.isoformat()}),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        code, sampler = wait_sampled(proc)
        total = time.time() - started
        naive_env = dict(env, MLFLOW_TRACKING_URI=tracking_uri)
        naive_env.pop("OMP_WAIT_POLICY")
        naive_env.pop("ARROW_DEFAULT_MEMORY_POOL")
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "bench_scoring.py"),
                "--worker",
                "naive",
                "--spec",
                json.dumps(naive_spec),
            ],
            env=naive_env,
            capture_output=True,
            text=True,
        )
    if code != 0:
        raise SystemExit(f"the night failed (exit {code}); see {folder / 'dags-test.log'}")
    naive = json.loads(out.stdout.strip().splitlines()[-1])
    tasks = _tasks(home / "airflow.db")
    print(f"\n{'task':<22} {'state':<8} {'seconds':>8} {'peak RSS':>10}")
    for task, start, end, state in tasks:
        print(f"{task:<22} {state:<8} {end - start:>8.2f} {sampler.peak(start, end):>8,.0f} MB")
    night = max(end for _, _, end, _ in tasks) - min(start for _, start, _, _ in tasks)
    busy_note = f", {args.busy_loops} busy loops beside it" if args.busy_loops else ""
    print(
        f"\nnight (first task's start to last task's end): {night:.1f} s (target < 20 s{busy_note}); "
        f"`dags test` process wall time {total:.1f} s (Python, Airflow and DAG imports, DB set-up included)"
    )
    print(
        f"naive scoring of the same partition: {naive['seconds']:.1f} s ({naive['rows']:,} rows, peak RSS "
        f"{naive['peak_rss_mb']:,.0f} MB); night / naive = {night / naive['seconds']:.2f} (target <= 1)"
    )
    print(
        f"peak RSS of the whole night: {max((mb for _, mb in sampler.samples), default=0):,.0f} MB (target: no task above 1 GB)"
    )
    print(f"task log: {folder / 'dags-test.log'}")


if __name__ == "__main__":
    main()
