"""Soak: N consecutive nights on the embedded default through real Airflow runs, checking the invariants after each.

Drift from night 20, labels landing label_delay_days late night by night, the retraining the scheduler would start
after each request, one bad partition a week (truncated / missing column / unknown categories in turn), and one
night killed mid-scoring: a separate process scores it and is killed with SIGKILL once its temporary file holds
data, then that night's DAG run goes on as the rerun would. After every night: every scored partition has one
finite score per incoming row and unique ids, quarantined nights have no predictions, no temporary or staging
file is left, the audit chain verifies and the champion alias is the one the audit log names. Prints time and
memory per night and the first nights against the last (a leak or a slowdown shows).

Usage: uv run python bench/soak.py [--nights 60] [--rows 5000] [--out var/soak] [--kill-night 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFECTS = ("truncated", "missing_column", "unknown_category")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _setup(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    raw = yaml.safe_load((REPO / "include" / "config" / "pipeline.yaml").read_text())
    raw["data_root"], raw["mlflow"]["store_dir"] = str(out / "data"), str(out / "mlflow")
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.environ.update(
        {
            "PIPELINE_CONFIG": str(path),
            "AIRFLOW_HOME": str(out / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_TELEMETRY": "false",
        }
    )
    os.environ.setdefault("AIRFLOW_VAR_PIPELINE_AUDIT_KEY", "soak-audit-key")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return path


def _kill_mid_scoring(config_path: Path, config, ds: str) -> str:
    from pipelines.storage.partitions import partition_dir

    folder = partition_dir(config.data_root, "predictions", ds)
    worker = [sys.executable, str(REPO / "tests" / "fault_worker.py"), str(config_path), "score", ds, "soak-killed"]
    proc = subprocess.Popen(worker, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        temps = list(folder.glob(".predictions.parquet.tmp-*")) if folder.exists() else []
        if any(t.stat().st_size > 50_000 for t in temps):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"killed mid-write ({sum(t.stat().st_size for t in temps):,} bytes in the temp file)"
        time.sleep(0.02)
    proc.kill()
    return "the worker finished before it could be killed"


def _invariants(config, quarantined: set[str]) -> list[str]:
    import pandas as pd

    from pipelines.governance import audit
    from pipelines.governance.promotion import champion_matches_audit
    from pipelines.storage.atomic import is_leftover
    from pipelines.storage.partitions import list_partitions, partition_dir

    problems = []
    for day in list_partitions(config.data_root, "predictions"):
        ds = day.isoformat()
        out = pd.read_parquet(partition_dir(config.data_root, "predictions", ds))
        rows = pd.read_parquet(partition_dir(config.data_root, "incoming", ds), columns=[config.id_column])
        if ds in quarantined:
            problems.append(f"{ds}: quarantined but has predictions")
        if len(out) != len(rows) or not out["id"].is_unique or not out["score"].notna().all():
            problems.append(f"{ds}: {len(out)} predictions for {len(rows)} rows (unique {out['id'].is_unique})")
    for area in ("predictions", "reports"):
        problems += [f"leftover {p}" for p in (config.data_root / area).rglob(".*") if is_leftover(p)]
    audit.read_audit(config)  # raises if the chain or its head does not verify
    if not champion_matches_audit(config):
        problems.append("the champion alias is not the one the audit log names")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=60)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--out", default=str(REPO / "var" / "soak"))
    parser.add_argument("--kill-night", type=int, default=30)
    args = parser.parse_args()
    config_path = _setup(Path(args.out))

    from harness.runner import retraining_requests, run_dag
    from harness.sample_data import DriftSpec, break_partition, generate, write_day
    from pipelines.core.config import load_config
    from pipelines.flows.retraining import reason_from_trigger
    from pipelines.governance.registry import init_store
    from pipelines.storage.partitions import partition_dir

    config = load_config(config_path)
    start, train_days = date(2026, 1, 1), 28
    first_night = start + timedelta(days=train_days)
    nights = [first_night + timedelta(days=i) for i in range(args.nights)]
    drift = DriftSpec(start=first_night + timedelta(days=20), covariate=True, concept=True)
    generate(
        config.data_root,
        start,
        train_days + args.nights,
        args.rows,
        config.label_delay_partitions,
        as_of=first_night - timedelta(days=1),
        seed=11,
        drift=drift,
    )
    kill_ds = nights[min(args.kill_night, len(nights) - 1)]
    write_day(config.data_root, kill_ds, 400_000, 11, drift, with_labels=False)  # big enough to kill mid-write
    init_store(config)
    boot = run_dag(
        "retrain_model", None, {"window_end": (first_night - timedelta(days=1)).isoformat(), "reason": "soak"}
    )
    assert boot.state == "success", boot.task_states
    quarantined: set[str] = set()
    rows = []
    print(f"{'night':<11} {'state':<8} {'s':>6} {'rss MB':>7} {'peak MB':>8}  notes", flush=True)
    for number, ds in enumerate(nights):
        notes = []
        write_day(
            config.data_root,
            ds - timedelta(days=config.label_delay_partitions),
            args.rows,
            11,
            drift,
            with_labels=True,
            with_features=False,
        )
        if number % 7 == 3:
            defect = DEFECTS[(number // 7) % len(DEFECTS)]
            break_partition(config.data_root, ds, defect)
            notes.append(f"bad partition ({defect})")
        if ds == kill_ds:
            notes.append(_kill_mid_scoring(config_path, config, ds.isoformat()))
        started = time.monotonic()
        night = run_dag("batch_scoring", datetime.combine(ds + timedelta(days=1), dtime(2, 0), tzinfo=UTC))
        if night.task_states.get("validate_partition") == "failed":
            quarantined.add(ds.isoformat())
            notes.append("quarantined")
        requests = retraining_requests(night.run_id)
        if requests:
            retrain = run_dag("retrain_model", None, {"reason": reason_from_trigger("soak request", requests)})
            gate = retrain.task_states
            notes.append(
                "retrain: "
                + (
                    "promoted"
                    if gate.get("promote_candidate") == "success"
                    else "rejected"
                    if gate.get("reject_candidate") == "success"
                    else "skipped"
                    if "skipped" in (gate.get("select_training_window"), gate.get("train_candidate"))
                    else retrain.state
                )
            )
        seconds = time.monotonic() - started
        problems = _invariants(config, quarantined)
        if (
            ds.isoformat() not in quarantined
            and not (partition_dir(config.data_root, "predictions", ds) / "predictions.parquet").exists()
        ):
            problems.append(f"{ds}: not scored ({night.task_states})")
        rows.append(
            {
                "ds": ds.isoformat(),
                "seconds": seconds,
                "rss": _status_mb("VmRSS"),
                "peak": _status_mb("VmHWM"),
                "problems": problems,
                "notes": notes,
            }
        )
        print(
            f"{ds.isoformat():<11} {night.state:<8} {seconds:>6.1f} {rows[-1]['rss']:>7.0f} {rows[-1]['peak']:>8.0f}  "
            f"{'; '.join(notes)}{'  PROBLEMS: ' + '; '.join(problems) if problems else ''}",
            flush=True,
        )
    plain = [r for r in rows if not r["notes"]]
    head, tail = plain[:10], plain[-10:]
    print(
        f"\n{len(rows)} nights, {len(quarantined)} quarantined, {sum(bool(r['problems']) for r in rows)} with problems"
    )
    print(
        f"plain nights (no retrain, no defect): first 10 median {statistics.median(r['seconds'] for r in head):.1f} s, "
        f"RSS {statistics.median(r['rss'] for r in head):.0f} MB; last 10 median "
        f"{statistics.median(r['seconds'] for r in tail):.1f} s, RSS {statistics.median(r['rss'] for r in tail):.0f} MB; "
        f"peak RSS of the process {rows[-1]['peak']:.0f} MB"
    )
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
