"""Scoring benchmark: our scoring step against the naive whole-frame baseline, same model, quiet and busy, one run.

    make bench                       # 2M rows (3 repeats each), our step at 5M rows, quiet then busy
    uv run python bench/bench_scoring.py --rows 2000000 --big-rows 5000000 --repeats 3

The baseline is what a user writes: the whole partition into pandas, scikit-learn's `predict_proba` with its
defaults (OpenMP's default wait policy included: its process never imports `pipelines`), one Parquet write.
Ours is `score_partition` with the default `scoring.engine: auto` (the compiled trees, verified).

Two conditions in one run: a quiet machine, and a busy one, where the bench starts two CPU-bound busy loops of
its own (bounded in time, stopped afterwards) beside each measurement. Each measurement runs in its own process,
which first loads the model and then starts the clock, so rows/s measure scoring: read, predict, write. Peak RSS
is the process's VmHWM, imports included. Prints rows/s and peak RSS per run, medians, ratios and the largest
score difference between ours and the baseline on the same rows.
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
from contextlib import contextmanager
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TRAIN_START, NIGHT, BIG_NIGHT = date(2026, 9, 1), date(2026, 9, 20), date(2026, 9, 21)
BUSY_SECONDS = 3600  # the longest a busy loop may live, whatever happens to the bench


def _worker(kind: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    if kind == "naive":  # what a user writes, and nothing of ours imported: scikit-learn's defaults throughout
        import mlflow.sklearn
        import pandas as pd

        model = mlflow.sklearn.load_model(spec["model_uri"])
        started = time.perf_counter()
        frame = pd.read_parquet(spec["incoming"])
        out = pd.DataFrame(
            {"id": frame[spec["id_column"]], "score": model.predict_proba(frame[spec["features"]])[:, 1]}
        )
        out["prediction"] = (out["score"] >= spec["threshold"]).astype("int8")
        out["model_version"] = spec["version"]
        out.to_parquet(spec["output"])
        rows, extra = len(out), {"output": spec["output"]}
    else:
        from pipelines.core.config import load_config
        from pipelines.governance.registry import Registry

        config = load_config(spec["config"])
        models = Registry.open(config)
        ref = models.champion()
        models.load_model(ref)
        started = time.perf_counter()
        if kind == "floor":
            rows, extra = 0, {}
        else:
            from pipelines.flows.scoring import score_partition

            summary = score_partition(config, spec["ds"], ref, "bench")
            rows, extra = (
                summary.rows,
                {"output": summary.path, "engine": summary.engine, "reason": summary.engine_reason},
            )
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), **extra}))


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM). ru_maxrss is not used: it inherits the parent's peak at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measure(kind: str, spec: dict) -> dict:
    # each side sets (or not) its own native settings: the naive one keeps the libraries' defaults
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ARROW_DEFAULT_MEMORY_POOL")}
    env |= {"GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_ENABLE_TELEMETRY": "false"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--spec", json.dumps(spec)],
        capture_output=True,
        env=env,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed with status {proc.returncode}: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / max(result["seconds"], 1e-9)
    return result


@contextmanager
def busy(loops: int):
    """Run `loops` CPU-bound processes beside the block (each ends by itself after BUSY_SECONDS at the latest)."""
    code = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(loops)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def prepare(folder: Path, nights: dict[date, int]) -> tuple[Path, dict]:
    """A lake under `folder` (default config): 14 training days, a compiled champion, and `nights` (ds: rows).

    Reused when it is there. Returns the config file and the naive baseline's spec for the first night.
    """
    import yaml

    from harness import sample_data
    from pipelines.core.config import DEFAULT_CONFIG, load_config
    from pipelines.flows import retraining
    from pipelines.governance import registry
    from pipelines.governance.registry import Registry

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(data_root=str(folder / "data"))
    raw["mlflow"]["store_dir"] = str(folder / "mlflow")
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    if not all((config.data_root / "incoming" / f"ds={day}").exists() for day in nights):
        sizes = " and ".join(f"a {n:,}-row" for n in nights.values())
        print(f"preparing: training data, champion, {sizes} partition in {folder}")
        sample_data.generate(config.data_root, TRAIN_START, 14, 20_000, label_delay_days=0)
        window = retraining.select_training_window(config)
        started = time.monotonic()
        retraining.bootstrap_or_challenge(config, retraining.train_candidate(config, window, {"reason": "bench"}))
        print(f"trained, registered and compiled the champion in {time.monotonic() - started:.0f} s")
        for day, n in nights.items():
            sample_data.write_day(config.data_root, day, n, 11, sample_data.DriftSpec(), with_labels=False)
        registry.init_store(config)
    ref = Registry.open(config).champion()
    naive = {
        "model_uri": f"runs:/{ref.run_id}/model",
        "incoming": str(config.data_root / "incoming" / f"ds={next(iter(nights))}"),
        "id_column": config.id_column,
        "features": config.features.all,
        "threshold": config.model.decision_threshold,
        "version": ref.version,
        "output": str(folder / "naive.parquet"),
        "tracking_uri": config.tracking_uri,
    }
    return path, naive


def _row(label: str, runs: list[dict]) -> dict[str, float]:
    rate = statistics.median(r["rows_per_s"] for r in runs)
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    each = ", ".join(f"{r['rows_per_s']:,.0f} rows/s {r['peak_rss_mb']:,.0f} MB" for r in runs)
    print(f"{label:<34} median {rate:>10,.0f} rows/s  peak RSS {rss:>7,.0f} MB   [{each}]")
    return {"rows_per_s": rate, "peak_rss_mb": rss}


def _max_difference(ours: str, naive: str) -> float:
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(ours, columns=["id", "score"]).set_index("id")["score"]
    b = pd.read_parquet(naive, columns=["id", "score"]).set_index("id")["score"]
    return float(np.abs(a.sort_index().to_numpy() - b.sort_index().to_numpy()).max())


def _condition(name: str, repeats: int, config_path: Path, naive_spec: dict, rows: int, big_rows: int) -> None:
    print(f"\n== {name} ==")
    ours_spec = {"config": str(config_path), "ds": NIGHT.isoformat()}
    big_spec = {"config": str(config_path), "ds": BIG_NIGHT.isoformat()}
    naive, ours, big = [], [], []
    for _ in range(repeats):
        naive.append(_measure("naive", naive_spec))
        ours.append(_measure("ours", ours_spec))
        big.append(_measure("ours", big_spec))
    n = _row(f"naive, {rows:,} rows", naive)
    o = _row(f"ours ({ours[-1]['engine']}), {rows:,} rows", ours)
    b = _row(f"ours ({big[-1]['engine']}), {big_rows:,} rows", big)
    if ours[-1]["reason"]:
        print(f"scikit-learn scored ours because: {ours[-1]['reason']}")
    difference = _max_difference(ours[-1]["output"], naive[-1]["output"])
    print(
        f"[{name}] throughput ours/naive: {o['rows_per_s'] / n['rows_per_s']:.2f}x (target >= 2.5x); "
        f"peak memory ours/naive: {o['peak_rss_mb'] / n['peak_rss_mb']:.2f} (target <= 0.25); "
        f"peak memory ours at {big_rows:,} / at {rows:,} rows: {b['peak_rss_mb'] / o['peak_rss_mb']:.2f} "
        f"(target: flat); max |score difference| ours vs naive: {difference:.2g} (target <= 1e-9)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy-loops", type=int, default=2, help="0: the quiet condition only")
    parser.add_argument("--folder", help="work folder (default: a temporary one; reused when it holds the data)")
    parser.add_argument("--worker", choices=["ours", "naive", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.spec)
        return
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-scoring-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path, naive_spec = prepare(folder, {NIGHT: args.rows, BIG_NIGHT: args.big_rows})
    os.environ["MLFLOW_TRACKING_URI"] = naive_spec.pop("tracking_uri")
    print(f"cpu count {os.cpu_count()}; {args.repeats} repeats per condition, interleaved")
    floor = _measure("floor", {"config": str(config_path), "ds": NIGHT.isoformat()})["peak_rss_mb"]
    print(f"process floor (imports + MLflow client + model loaded, no data): {floor:,.0f} MB")
    _condition("quiet machine", args.repeats, config_path, naive_spec, args.rows, args.big_rows)
    if not args.busy_loops:
        return
    with busy(args.busy_loops):
        _condition(
            f"busy machine ({args.busy_loops} busy loops)",
            args.repeats,
            config_path,
            naive_spec,
            args.rows,
            args.big_rows,
        )


if __name__ == "__main__":
    main()
