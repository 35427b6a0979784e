"""Scoring benchmark: our streaming scoring step against the naive whole-frame baseline, same model, one run.

    make bench                       # 2M rows (3 repeats each) and our step at 5M rows
    uv run python bench/bench_scoring.py --rows 2000000 --big-rows 5000000 --repeats 3

Each measurement runs in its own process, which first loads the champion (imports, MLflow client,
model) and then starts the clock, so rows/s measure scoring: read, predict, write. Peak RSS is the
process's VmHWM, imports included; the "floor" process loads the model and scores nothing.
Prints rows/s and peak RSS per run, their medians, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TRAIN_START, NIGHT, BIG_NIGHT = date(2026, 9, 1), date(2026, 9, 20), date(2026, 9, 21)


def _worker(kind: str, config_path: str, ds: str) -> None:
    from pipelines.config import load_config
    from pipelines.registry import Registry

    config = load_config(config_path)
    # Warm up imports, the MLflow client and the model loader so that the clock measures scoring,
    # not the ~10 s of imports both ways pay once per process.
    models = Registry.open(config)
    ref = models.champion()
    model = models.load_model(ref)
    started = time.perf_counter()
    if kind == "floor":
        rows = 0
    elif kind == "ours":
        from pipelines.scoring import score_partition

        rows = score_partition(config, ds, ref, "bench").rows
    else:
        import pandas as pd

        frame = pd.read_parquet(config.data_root / "incoming" / f"ds={ds}")
        out = pd.DataFrame(
            {"id": frame[config.id_column], "score": model.predict_proba(frame[config.features.all])[:, 1]}
        )
        out["prediction"] = (out["score"] >= config.model.decision_threshold).astype("int8")
        out["model_version"] = ref.version
        out.to_parquet(Path(tempfile.mkdtemp()) / "naive.parquet")
        rows = len(out)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM). ru_maxrss is not used: it inherits the parent's peak at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measure(kind: str, config_path: Path, ds: date) -> dict[str, float]:
    env = dict(os.environ, GX_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", MLFLOW_ENABLE_TELEMETRY="false")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, "--config", str(config_path), "--ds", ds.isoformat()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed with status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / max(result["seconds"], 1e-9)
    return result


def _prepare(folder: Path, rows: int, big_rows: int) -> Path:
    import yaml

    from pipelines import registry, retraining, sample_data
    from pipelines.config import DEFAULT_CONFIG, load_config

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(data_root=str(folder / "data"))
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    print(f"preparing: training data, champion, a {rows:,}-row and a {big_rows:,}-row partition in {folder}")
    sample_data.generate(config.data_root, TRAIN_START, 14, 20_000, label_delay_days=0)
    window = retraining.select_training_window(config)
    retraining.bootstrap_or_challenge(config, retraining.train_candidate(config, window, {"reason": "bench"}))
    for day, n in ((NIGHT, rows), (BIG_NIGHT, big_rows)):
        sample_data.write_day(config.data_root, day, n, 11, sample_data.DriftSpec(), with_labels=False)
    registry.init_store(config)
    return path


def _row(label: str, runs: list[dict[str, float]]) -> dict[str, float]:
    rate = statistics.median(r["rows_per_s"] for r in runs)
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    each = ", ".join(f"{r['rows_per_s']:,.0f} rows/s {r['peak_rss_mb']:,.0f} MB" for r in runs)
    print(f"{label:<28} median {rate:>10,.0f} rows/s  peak RSS {rss:>7,.0f} MB   [{each}]")
    return {"rows_per_s": rate, "peak_rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", help="work folder (default: a temporary one)")
    parser.add_argument("--worker", choices=["ours", "naive", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--ds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.config, args.ds)
        return
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-scoring-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path = _prepare(folder, args.rows, args.big_rows)
    print(f"cpu count {os.cpu_count()}; {args.repeats} repeats, interleaved")
    floor = _measure("floor", config_path, NIGHT)["peak_rss_mb"]
    print(f"process floor (imports + MLflow client + model loaded, no data): {floor:,.0f} MB")
    naive, ours, big = [], [], []
    for _ in range(args.repeats):
        naive.append(_measure("naive", config_path, NIGHT))
        ours.append(_measure("ours", config_path, NIGHT))
        big.append(_measure("ours", config_path, BIG_NIGHT))
    n = _row(f"naive, {args.rows:,} rows", naive)
    o = _row(f"ours, {args.rows:,} rows", ours)
    b = _row(f"ours, {args.big_rows:,} rows", big)
    print(
        f"\nthroughput ours/naive: {o['rows_per_s'] / n['rows_per_s']:.2f}x (target >= 2x)\n"
        f"peak memory ours/naive: {o['peak_rss_mb'] / n['peak_rss_mb']:.2f} (target <= 0.25); "
        f"above the floor: {(o['peak_rss_mb'] - floor) / (n['peak_rss_mb'] - floor):.2f}\n"
        f"peak memory ours at {args.big_rows:,} / at {args.rows:,} rows: {b['peak_rss_mb'] / o['peak_rss_mb']:.2f} "
        "(target: no growth)"
    )


if __name__ == "__main__":
    main()
