"""Command line: sample data, store initialisation, and the end-to-end demo (`python -m pipelines.cli -h`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, date, datetime, time as dtime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import CONFIG_ENV_VAR, DEFAULT_CONFIG, PipelineConfig, config_path, load_config
from pipelines.errors import PipelineError

if TYPE_CHECKING:
    from pipelines.airflow_adapter import DagRunOutcome

DEMO_START = date(2026, 9, 1)
DEMO_TRAIN_END = date(2026, 9, 28)
DEMO_NIGHTS = 17  # to 2026-10-15: enough labelled days after the drift onset to retrain on, then one more night
DEMO_ROWS = 5000
DEMO_BAD_NIGHT = (date(2026, 10, 3), "missing_column")
DEMO_DRIFT_START = date(2026, 10, 6)


def _generate(config: PipelineConfig, args: argparse.Namespace) -> None:
    from pipelines.sample_data import DriftSpec, generate

    drift = DriftSpec(
        start=date.fromisoformat(args.drift_start) if args.drift_start else None,
        covariate=args.drift in ("covariate", "both"),
        concept=args.drift in ("concept", "both"),
    )
    dates = generate(
        config.data_root,
        start=date.fromisoformat(args.start),
        days=args.days,
        rows_per_day=args.rows,
        label_delay_days=config.label_delay_partitions if args.label_delay is None else args.label_delay,
        as_of=date.fromisoformat(args.as_of) if args.as_of else None,
        seed=args.seed,
        drift=drift,
    )
    print(f"wrote {len(dates)} partitions of {args.rows:,} rows under {config.data_root}")


def _break(config: PipelineConfig, args: argparse.Namespace) -> None:
    from pipelines.sample_data import break_partition

    break_partition(config.data_root, date.fromisoformat(args.ds), args.defect)
    print(f"damaged incoming/ds={args.ds} ({args.defect})")


def _init_mlflow(config: PipelineConfig, _: argparse.Namespace) -> None:
    from pipelines.registry import init_store

    print(f"MLflow store ready: {init_store(config)}")


def _night_row(ds: date, outcome: DagRunOutcome, config: PipelineConfig) -> dict[str, object]:
    from pipelines.lake import QUARANTINE, partition_dir

    scored = outcome.returns.get("score_partition") or {}
    validated = outcome.returns.get("validate_partition")
    quarantine = partition_dir(config.data_root, QUARANTINE, ds) / "validation.json"
    if validated:
        status = f"passed {validated['expectations']} checks"
    elif quarantine.is_file():
        status = "QUARANTINED: " + "; ".join(json.loads(quarantine.read_text())["failures"])[:90]
    else:
        status = outcome.task_states.get("validate_partition", "not run")
    decided = outcome.returns.get("decide_retraining") or {}
    return {
        "ds": ds.isoformat(),
        "run": outcome.state,
        "rows": scored.get("rows", validated["rows"] if validated else "-"),
        "validation": status,
        "model": scored.get("model_version", "-"),
        "mean score": f"{scored['mean_score']:.4f}" if scored else "-",
        "seconds": f"{outcome.seconds:.1f}",
        "decision": ("retrain" if decided["retrain"] else "keep") if decided else "-",
    }


def print_table(rows: list[dict[str, object]]) -> None:
    """Print dictionaries as an aligned text table."""
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths)))


def _retrain_cell(outcome: DagRunOutcome | None) -> str:
    if outcome is None:
        return "-"
    states, returns = outcome.task_states, outcome.returns
    if states.get("select_training_window") == "skipped":
        return "skipped: too few labelled days since the drift onset"
    if outcome.state != "success":
        return f"{outcome.state}: {states}"
    gate = returns.get("evaluate_gate") or {}
    version = (returns.get("train_candidate") or {}).get("version")
    comparison = gate.get("comparison") or {}
    figures = f" (gain {comparison['difference']:+.3f}, CI {comparison['ci_low']:+.3f}..{comparison['ci_high']:+.3f})" if comparison else ""
    if states.get("promote_candidate") == "success":
        return f"v{version} PROMOTED{figures}"
    if states.get("reject_candidate") == "success" or states.get("settle_approval") == "success":
        return f"v{version} rejected{figures}"
    if states.get("approve_promotion") == "success":
        return f"v{version} awaiting approval"
    return f"v{version}: {states}"


def _demo(config: PipelineConfig, args: argparse.Namespace) -> None:
    from pipelines.airflow_adapter import retraining_requests, run_dag
    from pipelines.monitoring import history_table
    from pipelines.audit import read_audit
    from pipelines.registry import init_store
    from pipelines.retraining import reason_from_trigger
    from pipelines.sample_data import DriftSpec, break_partition, generate, write_day

    started = time.monotonic()
    if args.fresh:
        for folder in (config.data_root, config.mlflow.store_dir):
            shutil.rmtree(folder, ignore_errors=True)
    nights = [DEMO_TRAIN_END + timedelta(days=i + 1) for i in range(DEMO_NIGHTS)]
    total_days = (nights[-1] - DEMO_START).days + 1
    print(
        f"1/6 generating {total_days} daily partitions of {DEMO_ROWS:,} rows under {config.data_root}, "
        f"with covariate and concept drift from {DEMO_DRIFT_START}"
    )
    drift = DriftSpec(start=DEMO_DRIFT_START, covariate=True, concept=True)
    # labels exist up to the training window; later ones land night by night, label_delay_partitions late
    first_night = DEMO_TRAIN_END + timedelta(days=1)
    generate(
        config.data_root, DEMO_START, total_days, DEMO_ROWS, config.label_delay_partitions,
        as_of=first_night - timedelta(days=1), seed=args.seed, drift=drift,
    )
    break_partition(config.data_root, *DEMO_BAD_NIGHT)
    print(f"    damaged ds={DEMO_BAD_NIGHT[0]} on purpose ({DEMO_BAD_NIGHT[1]}) to show the quarantine")
    print(f"2/6 initialising the MLflow store {init_store(config)}")
    print("3/6 retrain_model (bootstrap: no champion yet), through Airflow")
    boot = run_dag("retrain_model", None, {"window_end": DEMO_TRAIN_END.isoformat(), "reason": "bootstrap"})
    if boot.state != "success":
        raise PipelineError(f"retrain_model ended {boot.state}: {boot.task_states}; see the log above")
    trained = boot.returns["train_candidate"]
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained["metrics"].items())
    print(f"    {trained['name']} version {trained['version']} is champion (held-out {metrics})")
    print(
        f"4/6 batch_scoring for {len(nights)} nights through Airflow; after a night that requests retraining, the\n"
        "    retrain_model run the scheduler would start on that Asset event (gate, then promotion or rejection)"
    )
    rows = []
    for ds in nights:
        landed = ds - timedelta(days=config.label_delay_partitions)
        write_day(config.data_root, landed, DEMO_ROWS, args.seed, drift, with_labels=True, with_features=False)
        logical = datetime.combine(ds + timedelta(days=1), dtime(2, 0), tzinfo=UTC)
        night = run_dag("batch_scoring", logical)
        requests = retraining_requests(night.run_id)
        retrain = None
        if requests:
            retrain = run_dag("retrain_model", None, {"reason": reason_from_trigger("retraining request", requests)})
        rows.append(_night_row(ds, night, config) | {"retraining": _retrain_cell(retrain)})
    print("5/6 rollback_model (undo the promotion, as an operator would after a bad night), then rescore the last night")
    rollback = run_dag("rollback_model", None, {"reason": "demo: undo the promotion"})
    rescored = run_dag("batch_scoring", None, {"ds": nights[-1].isoformat()})
    print("6/6 results\n")
    print_table(rows)
    print("\nMonitoring history (drift against the champion's reference; AUC estimated by CBPE, realised once labels land):\n")
    print_table(history_table(config))
    print("\nAudit log of champion moves (" + str(config.audit_log) + "):\n")
    print_table([
        {"when": e["at"][:19], "action": e["action"], "from": e["from_version"] or "-", "to": e["to_version"],
         "by": e["approved_by"], "reason": str(e["reason"])[:70]}
        for e in read_audit(config)
    ])
    version = (rescored.returns.get("score_partition") or {}).get("model_version", "?")
    print(
        f"\nAfter the rollback ({rollback.state}) ds={nights[-1]} was rescored by v{version}. To return to the "
        "promoted model, trigger rollback_model with target_version set to it."
    )
    print(
        f"\nDemo finished in {time.monotonic() - started:.0f} s. Outputs:\n"
        f"  predictions  {config.data_root / 'predictions'}\n"
        f"  quarantine   {config.data_root / 'quarantine'}\n"
        f"  reports      {config.data_root / 'reports'}  (Evidently HTML: open drift.html in a browser;\n"
        f"               gate comparisons under reports/models/)\n"
        f"  history      {config.history_url}\n"
        f"  audit log    {config.audit_log}\n"
        f"  MLflow       {config.tracking_uri}  (UI: make mlflow-ui, then http://127.0.0.1:5000)\n"
        f"  Airflow UI   make airflow-ui, then http://127.0.0.1:8080; the monitoring page is\n"
        f"               'Model monitoring' in its navigation (http://127.0.0.1:8080/monitoring/)"
    )


def _example(config: PipelineConfig, args: argparse.Namespace) -> None:
    """Write the weekly churn example (data unlike the demo) and its config into a folder."""
    import yaml

    from pipelines import example_data
    from pipelines.cadence import shift
    from pipelines.config import load_config

    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(example_data.example_config("data", "mlflow", args.cadence), sort_keys=False))
    example = load_config(path)
    first = shift(example, date.fromisoformat(args.first) - timedelta(days=1), 1)  # the first partition on or after
    dates = [shift(example, first, i) for i in range(args.partitions)]
    shape = example_data.Shape(shift_at=args.shift_at, break_at=args.shift_at)
    example_data.generate(example.data_root, dates, args.rows, shape=shape,
                          labelled=args.partitions - example.label_delay_partitions)
    print(f"wrote {len(dates)} {args.cadence} partitions ({dates[0]} .. {dates[-1]}, about {args.rows} rows each) "
          f"under {example.data_root}\nconfig: {path}\nnext: export PIPELINE_CONFIG={path}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one command; return the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.cli", description=__doc__)
    parser.add_argument("--config", help=f"pipeline YAML (default: ${CONFIG_ENV_VAR} or the bundled default)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write deterministic sample partitions")
    gen.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    gen.add_argument("--days", type=int, default=1)
    gen.add_argument("--rows", type=int, default=DEMO_ROWS, help="rows per daily partition")
    gen.add_argument("--as-of", help="labels exist for days at least label_delay_partitions before this date")
    gen.add_argument("--label-delay", type=int, help="override label_delay_partitions of the config (the sample data is daily)")
    gen.add_argument("--drift-start", help="date from which drift is injected")
    gen.add_argument("--drift", choices=["covariate", "concept", "both"], default="both")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(handler=_generate)
    brk = sub.add_parser("break-partition", help="damage an incoming partition (demos and tests)")
    brk.add_argument("--ds", required=True)
    brk.add_argument("--defect", choices=["truncated", "missing_column", "unknown_category"], required=True)
    brk.set_defaults(handler=_break)
    ex = sub.add_parser("example", help="write a dataset unlike the demo (weekly churn, every column type) and its config")
    ex.add_argument("--folder", required=True, help="where pipeline.yaml, data/ and mlflow/ go")
    ex.add_argument("--first", default="2024-01-01", help="first partition on or after this date")
    ex.add_argument("--partitions", type=int, default=30)
    ex.add_argument("--rows", type=int, default=300, help="rows per partition (sizes vary 60-140%%)")
    ex.add_argument("--cadence", default="weekly")
    ex.add_argument("--shift-at", type=int, default=20, help="partition index where the data moves and churn changes")
    ex.set_defaults(handler=_example)
    sub.add_parser("init-mlflow", help="create the MLflow store once").set_defaults(handler=_init_mlflow)
    demo = sub.add_parser(
        "demo", help="the whole loop through Airflow: nightly scoring, drift, retraining, gate, promotion, rollback"
    )
    demo.add_argument("--fresh", action="store_true", help="delete the config's data root and MLflow store first")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=_demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        chosen = Path(args.config) if args.config else config_path(os.environ)
        if args.command == "demo" and args.fresh and chosen.resolve() != DEFAULT_CONFIG:
            raise PipelineError("--fresh deletes data: it is only allowed with the bundled demo config")
        args.handler(config, args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
