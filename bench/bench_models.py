"""Many models in one deployment: DAG parse time and overview render time with N model configs (default 50).

Writes N model configs (binary, multiclass and regression in turn) into a temporary folder, all on one history
database holding 30 nights per model, then measures in fresh processes, as a DAG processor would:
  - each DAG file's import (what the DAG processor parses), and the three together;
  - the overview page's render (all models' history and audit log read) in the api-server's process.
Medians of `--repeat` runs. Run by hand (not a test):

    uv run python bench/bench_models.py [--models 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
KINDS = ("binary", "multiclass", "regression")

PARSE = """
import json, sys, time, importlib.util
from pathlib import Path
import airflow.sdk  # a DAG processor has Airflow imported already
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location(path.stem + "_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dags = [v for v in vars(module).values() if type(v).__name__ == "DAG"]
    out[path.name] = time.perf_counter() - started
print(json.dumps(out))
"""

RENDER = """
import json, time
from pipelines.core.config import model_sources
from pipelines.surfaces.monitoring_page import render_overview
timings = []
for _ in range(3):
    started = time.perf_counter()
    page = render_overview(model_sources(), "/monitoring")
    timings.append(time.perf_counter() - started)
print(json.dumps({"seconds": timings, "rows": page.count("<tr>") - 1, "bytes": len(page)}))
"""


def write_models(folder: Path, count: int) -> Path:
    """N configs on one history database, each with 30 recorded nights; return the config folder."""
    sys.path.insert(0, str(REPO))
    from pipelines.core.config import load_config
    from pipelines.core.contracts import NightRecord
    from pipelines.storage import history

    base = yaml.safe_load((REPO / "include" / "config" / "pipeline.yaml").read_text())
    configs = folder / "models"
    configs.mkdir()
    for i in range(count):
        kind = KINDS[i % 3]
        raw = json.loads(json.dumps(base))
        raw["data_root"] = str(folder / "data" / f"m{i:03d}")
        raw["mlflow"]["store_dir"] = str(folder / "mlflow")
        raw["monitoring"]["history_url"] = f"sqlite:///{folder / 'history.db'}"
        raw["model"] |= {"registered_name": f"m{i:03d}", "kind": kind}
        for section, keys in (("retraining", ("metric", "realised_floor")), ("promotion", ("metric", "floors"))):
            for key in keys:
                raw[section].pop(key, None)
        path = configs / f"m{i:03d}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        for night in range(30):
            history.record_night(
                config,
                NightRecord(
                    ds=f"2026-10-{night + 1:02d}",
                    model_name=config.model.registered_name,
                    model_version="1",
                    rows=5000,
                    validation_success=True,
                    validation_failures=[],
                    drift_share=0.1,
                    metric=config.retraining.metric,
                    estimated_metric=0.8,
                    realised_metric=0.78,
                    decision="keep",
                ),
            )
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_models(Path(tmp), args.models)
        env = {**os.environ, "PIPELINE_CONFIG": str(configs), "AIRFLOW_HOME": str(Path(tmp) / "airflow")}
        env.setdefault("AIRFLOW_VAR_PIPELINE_AUDIT_KEY", "bench-only-key")
        parses, renders = [], []
        for _ in range(args.repeat):
            out = subprocess.run(
                [sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True, text=True, cwd=REPO
            )
            assert out.returncode == 0, out.stderr[-2000:]
            parses.append(json.loads(out.stdout.strip().splitlines()[-1]))
            out = subprocess.run([sys.executable, "-c", RENDER], env=env, capture_output=True, text=True, cwd=REPO)
            assert out.returncode == 0, out.stderr[-2000:]
            renders.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.models} model configs (binary, multiclass, regression in turn), 30 nights each, one history database")
    for name in parses[0]:
        print(f"  parse {name:<20} median {statistics.median(p[name] for p in parses):.3f} s")
    total = statistics.median(sum(p.values()) for p in parses)
    print(f"  parse all DAG files   median {total:.3f} s  (target < 2 s)")
    warm = statistics.median(min(r["seconds"]) for r in renders)
    first = statistics.median(r["seconds"][0] for r in renders)
    print(
        f"  overview render       median {warm:.3f} s warm, {first:.3f} s first in a process  (target < 1 s); "
        f"{renders[0]['rows']} rows, {renders[0]['bytes']:,} bytes"
    )


if __name__ == "__main__":
    main()
