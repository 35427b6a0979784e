"""How far the config travels: trace the pipeline's own calls that take the config, from a task's library call down.

Prints, for each traced step, the files the config visits in call order (consecutive calls in one file are one
stop), how many distinct files, and how many times it comes back to a file it had left. Run by hand:

    uv run python bench/config_walk.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def walk(step: Callable[[], Any], config: Any) -> list[str]:
    """The pipeline files entered, in order, by calls given `config` (an argument, or `self.config` of an object)."""
    files: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event != "call":
            return None
        path = frame.f_code.co_filename
        if "/pipelines/" not in path:
            return None
        owner = frame.f_locals.get("self")
        if owner is config:  # the config's own properties (config.history_url, ...) are the value, not a stop
            return None
        holds = any(value is config for value in frame.f_locals.values())
        if holds or getattr(owner, "config", None) is config:
            files.append(str(Path(path).relative_to(REPO)))
        return None

    sys.setprofile(None)
    sys.settrace(tracer)
    try:
        step()
    finally:
        sys.settrace(None)
    return files


def summary(name: str, files: list[str]) -> str:
    stops = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    left: set[str] = set()
    returns = 0
    for i, file in enumerate(stops):
        if file in left:
            returns += 1
        if i:
            left.add(stops[i - 1])
    return (
        f"{name}: {len(stops)} stops in {len(set(stops))} files, {returns} returns to a file already left\n"
        + "  "
        + " -> ".join(Path(f).stem for f in stops[:60])
    )


def main() -> None:
    from harness import sample_data
    from pipelines.core.config import load_config
    from pipelines.flows import nightly, retraining, scoring

    folder = Path(tempfile.mkdtemp(prefix="config-walk-"))
    raw = yaml.safe_load((REPO / "include" / "config" / "pipeline.yaml").read_text())
    raw["data_root"], raw["mlflow"]["store_dir"] = str(folder / "data"), str(folder / "mlflow")
    raw["training"]["min_rows"], raw["scoring"]["engine"] = 500, "sklearn"
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    sample_data.generate(config.data_root, date(2026, 9, 1), 12, 1500, label_delay_days=3)
    window = retraining.select_training_window(config)
    candidate = retraining.train_candidate(config, window, {"airflow_run_id": "walk", "reason": "bootstrap"})
    retraining.bootstrap_or_challenge(config, candidate)
    holder: dict[str, Any] = {}

    def validate() -> None:
        holder["validated"] = nightly.validate_partition(config, "2026-09-11", "walk")

    print(summary("validate_partition", walk(validate, config)))
    validated = holder["validated"]
    scored = scoring.score_partition(config, validated.ds, validated.model, "walk")

    def monitor() -> None:
        holder["night"] = nightly.monitor_night(config, validated, scored, "walk")

    print(summary("monitor_night", walk(monitor, config)))
    print(
        summary(
            "decide_retraining", walk(lambda: nightly.decide_retraining(config, holder["night"], [], False), config)
        )
    )


if __name__ == "__main__":
    main()
