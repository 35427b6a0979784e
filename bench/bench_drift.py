"""Drift benchmark: our nightly drift step (uniform streamed sample) against Evidently's full-data drift report.

    uv run python bench/bench_drift.py --rows 2000000 --reference-rows 100000 --repeats 3

Both compare the same partition (features + score) with the same reference and the same per-column
tests from the default config; the scores come from the night's predictions file, as in the
pipeline. The clock covers reading, sampling (ours), the drift report and writing its HTML + JSON;
each run is its own process (peak memory = VmHWM) with Evidently imported before the clock. Prints seconds,
peak memory, medians, ratios, and every column whose verdict differs between the two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NIGHT = date(2026, 10, 10)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _worker(kind: str, folder: Path) -> None:
    import pandas as pd

    from pipelines.core.config import load_config
    from pipelines.steps.drift import current_sample, drift_report
    from pipelines.storage.schema import incoming_partition

    config = load_config(folder / "pipeline.yaml")
    reference = pd.read_parquet(folder / "reference.parquet")
    files = sorted((config.data_root / "incoming" / f"ds={NIGHT}").glob("*.parquet"))
    predictions = folder / "predictions.parquet"
    import evidently.presets  # noqa: F401  (its ~8 s import is paid before the clock, as in a warm worker)

    started = time.perf_counter()
    if kind == "ours":
        current = current_sample(config, NIGHT.isoformat(), incoming_partition(config, NIGHT.isoformat()), predictions)
    else:
        current = pd.read_parquet(files[0], columns=[config.id_column, *config.features.all])
        scores = pd.read_parquet(predictions).rename(columns={"id": config.id_column})
        current = current.merge(scores, on=config.id_column)
    summary, paths = drift_report(config, current, reference, folder / kind)
    seconds = time.perf_counter() - started
    verdicts = {c: v["drifted"] for c, v in summary.columns.items()}
    html_mb = Path(paths["drift_html"]).stat().st_size / 1e6
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": _peak_rss_mb(),
                "verdicts": verdicts,
                "rows": len(current),
                "html_mb": html_mb,
            }
        )
    )


def _measure(kind: str, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--folder", str(folder)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepare(folder: Path, rows: int, reference_rows: int) -> None:
    import pandas as pd
    import yaml

    from harness import sample_data
    from pipelines.core.config import DEFAULT_CONFIG, load_config
    from pipelines.steps.training import build_model

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data_root"] = str(folder / "data")
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(folder / "pipeline.yaml")
    print(f"preparing a {rows:,}-row drifted night and a {reference_rows:,}-row reference in {folder}")
    train = sample_data.generate_chunk(date(2026, 9, 1), 0, reference_rows, 3, sample_data.DriftSpec())
    model = build_model(config).fit(train[config.features.all], train[config.target])
    reference = train[config.features.all].copy()
    reference["score"] = model.predict_proba(reference)[:, 1]
    reference.to_parquet(folder / "reference.parquet")
    drift = sample_data.DriftSpec(start=NIGHT, covariate=True)
    sample_data.write_day(config.data_root, NIGHT, rows, 7, drift, with_labels=False)
    night = pd.read_parquet(config.data_root / "incoming" / f"ds={NIGHT}")
    scores = pd.DataFrame(
        {"id": night[config.id_column], "score": model.predict_proba(night[config.features.all])[:, 1]}
    )
    scores.to_parquet(folder / "predictions.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder")
    parser.add_argument("--worker", choices=["ours", "evidently_full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-drift-"))
    if args.worker:
        _worker(args.worker, folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    _prepare(folder, args.rows, args.reference_rows)
    runs = {"evidently_full": [], "ours": []}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(_measure(kind, folder))
    medians = {}
    for kind, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rss = statistics.median(r["peak_rss_mb"] for r in results)
        medians[kind] = (seconds, rss)
        each = ", ".join(f"{r['seconds']:.1f} s {r['peak_rss_mb']:,.0f} MB" for r in results)
        print(
            f"{kind:<15} rows {results[0]['rows']:>9,}  median {seconds:6.1f} s  peak {rss:7,.0f} MB  "
            f"html {results[0]['html_mb']:.1f} MB  [{each}]"
        )
    full, ours = runs["evidently_full"][0]["verdicts"], runs["ours"][0]["verdicts"]
    differ = {c: (full[c], ours.get(c)) for c in full if full[c] != ours.get(c)}
    stable = all(r["verdicts"] == ours for r in runs["ours"])
    print(f"\nspeed-up: {medians['evidently_full'][0] / medians['ours'][0]:.1f}x (target >= 10x)")
    print(f"peak memory ours/full: {medians['ours'][1] / medians['evidently_full'][1]:.2f} (target <= 0.33)")
    print(f"drifted columns (full data): {sorted(c for c, d in full.items() if d)}")
    print(f"verdicts that differ (full, ours): {differ or 'none'}; ours identical across repeats: {stable}")


if __name__ == "__main__":
    main()
