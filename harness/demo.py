"""The end-to-end demo through real Airflow: nightly scoring, drift, retraining, the gate, promotion and rollback.

`python -m harness.demo --fresh` (what `make demo` runs). Airflow's task logs and MLflow's output go to a log
file under `var/`; the terminal gets one line per night and the tables at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from harness.runner import DagRunOutcome, forget_runs, retrain_params, retraining_requests, run_dag, unpause
from harness.sample_data import DriftSpec, break_partition, generate, write_day
from pipelines.core.config import (
    CONFIG_ENV_VAR,
    DATA_ROOT_ENV_VAR,
    DEFAULT_CONFIG,
    HISTORY_URL_ENV_VAR,
    REPORT_STORE_ENV_VAR,
    TRACKING_URI_ENV_VAR,
    ModelSource,
    PipelineConfig,
    config_path,
    model_sources,
)
from pipelines.core.contracts import Candidate, Decision, GateResult, ScoringSummary, ValidatedPartition
from pipelines.core.errors import PipelineError
from pipelines.core.paths import QUARANTINE, QUARANTINE_RECORD
from pipelines.governance.audit import read_audit
from pipelines.governance.registry import init_store
from pipelines.storage.history import read_history
from pipelines.storage.partitions import partition_dir
from pipelines.surfaces.monitoring_page import model_overview

# The demo writes and deletes only these folders of the checkout (and its own runs in the Airflow metadata DB).
VAR = Path(__file__).resolve().parent.parent / "var"
DEMO_DATA, DEMO_MLFLOW, DEMO_LOGS = VAR / "data", VAR / "mlflow", VAR / "demo"
DEMO_MODELS = VAR / "models"  # the data roots of the demo deployment's other models, one folder each
# the demo's deployment: three models side by side (credit_default is the bundled default config)
DEMO_DEPLOYMENT = Path(__file__).resolve().parent.parent / "include" / "config" / "models"
RUN_LEDGER = DEMO_LOGS / "runs.jsonl"  # the runs this demo started (dag id, logical date): --fresh forgets these only

START = date(2026, 9, 1)
TRAIN_END = date(2026, 9, 28)
NIGHTS = 17  # to 2026-10-15: enough labelled days after the drift onset to retrain on, then one more night
ROWS = 5000
BAD_NIGHT = (date(2026, 10, 13), "missing_column")  # late enough that the grid's newest 10 runs show it
DRIFT_START = date(2026, 10, 6)
# the other models' first night: one stable night before the drift, then the same episode (a shorter demo)
OTHERS_FIRST_NIGHT = date(2026, 10, 5)


@contextmanager
def output_to(log_file: Path) -> Iterator[None]:
    """Send everything this process writes to stdout and stderr (Airflow's task logs, progress bars) to a file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def print_table(rows: list[dict[str, object]]) -> None:
    """Print dictionaries as an aligned text table."""
    if not rows:
        print("(none)")
        return
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths)))


def night_row(ds: date, outcome: DagRunOutcome, config: PipelineConfig) -> dict[str, object]:
    """One row of the nights table: validation, rows, model, mean score, run time and decision."""
    returns = outcome.returns
    scored = ScoringSummary.model_validate(returns["score_partition"]) if "score_partition" in returns else None
    validated = (
        ValidatedPartition.model_validate(returns["validate_partition"]) if "validate_partition" in returns else None
    )
    decided = Decision.model_validate(returns["decide_retraining"]) if "decide_retraining" in returns else None
    quarantine = partition_dir(config.work_root, QUARANTINE, ds) / QUARANTINE_RECORD
    if validated:
        status = f"passed {validated.expectations} checks"
    elif quarantine.is_file():
        status = "QUARANTINED: " + "; ".join(json.loads(quarantine.read_text())["failures"])[:90]
    else:
        status = outcome.task_states.get("validate_partition", "not run")
    return {
        "ds": ds.isoformat(),
        "run": outcome.state,
        "rows": scored.rows if scored else (validated.rows if validated else "-"),
        "validation": status,
        "model": scored.model_version if scored else "-",
        "mean score": f"{scored.mean_score:.4f}" if scored else "-",
        "seconds": f"{outcome.seconds:.1f}",
        "decision": decision_cell(decided),
    }


def decision_cell(decided: Decision | None) -> str:
    """The night's decision: keep, or its episode and what the night did (opened, requested, held)."""
    if decided is None:
        return "-"
    if not decided.retrain and decided.episode is None:
        return "keep"
    episode = f"episode {decided.episode.id}" if decided.episode else "episode"
    if decided.request:
        return f"{episode}: REQUEST"
    if decided.episode is not None and not decided.episode.open:
        return f"{episode}: closed"
    return f"{episode}: {'opened, waits' if decided.alert == 'opened' else 'held'}"


def retrain_cell(outcome: DagRunOutcome | None) -> str:
    """What a retrain_model run did, in a few words."""
    if outcome is None:
        return "-"
    states, returns = outcome.task_states, outcome.returns
    if states.get("select_training_window") == "skipped":
        return "skipped: too few labelled days since the drift onset"
    if outcome.state != "success":
        return f"{outcome.state}: {states}"
    version = Candidate.model_validate(returns["train_candidate"]).version
    gate = GateResult.model_validate(returns["evaluate_gate"])
    figures = f" (gain {gate.comparison.describe()})" if gate.comparison else ""
    if states.get("promote_candidate") == "success":
        return f"v{version} PROMOTED{figures}"
    if states.get("reject_candidate") == "success" or states.get("settle_approval") == "success":
        return f"v{version} rejected{figures}"
    if states.get("approve_promotion") == "success":
        return f"v{version} awaiting approval"
    return f"v{version}: {states}"


def history_rows(config: PipelineConfig) -> list[dict[str, object]]:
    """Return the monitoring history as printable rows."""
    rows = []
    for r in read_history(config).itertuples():
        rows.append(
            {
                "ds": r.ds,
                "model": r.model_version,
                "valid": "yes" if r.validation_success else "NO",
                "drift share": "-" if pd.isna(r.drift_share) else f"{r.drift_share:.2f}",
                "drifted": ",".join(r.drifted_columns or [])[:40] or "-",
                "est auc": "-" if pd.isna(r.estimated_roc_auc) else f"{r.estimated_roc_auc:.3f}",
                "real auc": "-" if pd.isna(r.realised_roc_auc) else f"{r.realised_roc_auc:.3f}",
                "labels": "-" if pd.isna(r.label_coverage) else f"{100 * r.label_coverage:.0f}%",
                "decision": r.decision or "-",
            }
        )
    return rows


def foreign_locations(config: PipelineConfig, config_file: Path, environ: dict[str, str]) -> list[str]:
    """Return where the config points outside the demo's own folders, each named by the variable or key that set it.

    The demo generates data into its data root and `--fresh` deletes that root and the MLflow store: pointed at a
    user's folder, bucket or database they would be written over or deleted.
    """

    def source(variable: str, key: str) -> str:
        return f"${variable}" if environ.get(variable) else f"{key} in {config_file}"

    found = []
    own = {DEMO_DATA, DEMO_MODELS / config.model.registered_name}
    if not isinstance(config.data_root, Path) or config.data_root.resolve() not in own:
        found.append(f"{source(DATA_ROOT_ENV_VAR, 'data_root')} points at {config.data_root}, not {DEMO_DATA}")
    elif config.work_root.resolve() != config.data_root.resolve():
        found.append(f"work_dir in {config_file} points at {config.work_root}, not {config.data_root}")
    if config.mlflow.store_dir.resolve() != DEMO_MLFLOW:
        found.append(f"mlflow.store_dir in {config_file} points at {config.mlflow.store_dir}, not {DEMO_MLFLOW}")
    for value, variable, key in (
        (config.mlflow.tracking_uri, TRACKING_URI_ENV_VAR, "mlflow.tracking_uri"),
        (config.monitoring.history_url, HISTORY_URL_ENV_VAR, "monitoring.history_url"),
        (config.monitoring.report_store, REPORT_STORE_ENV_VAR, "monitoring.report_store"),
    ):
        if value and value != str(config.data_root):  # an s3:// data root is its own default report store
            found.append(f"{source(variable, key)} is set: the demo keeps its store under {VAR}")
    return found


def record_run(dag_id: str, logical_date: datetime) -> None:
    """Add a run the demo is about to start to its ledger (what `--fresh` may later delete)."""
    RUN_LEDGER.parent.mkdir(parents=True, exist_ok=True)
    with RUN_LEDGER.open("a") as ledger:
        ledger.write(json.dumps({"dag_id": dag_id, "logical_date": logical_date.isoformat()}) + "\n")


def recorded_runs() -> list[tuple[str, datetime]]:
    """The runs earlier demos started, from the ledger (none when it is missing)."""
    if not RUN_LEDGER.is_file():
        return []
    entries = [json.loads(line) for line in RUN_LEDGER.read_text().splitlines() if line.strip()]
    return [(e["dag_id"], datetime.fromisoformat(e["logical_date"])) for e in entries]


def start_over() -> int:
    """Delete the demo's own data, MLflow store and earlier runs (only those in its ledger); return the runs removed."""
    for folder in (DEMO_DATA, DEMO_MLFLOW, DEMO_MODELS):
        shutil.rmtree(folder, ignore_errors=True)
    forgotten = forget_runs(recorded_runs())
    RUN_LEDGER.unlink(missing_ok=True)
    return forgotten


def model_rows(config: PipelineConfig) -> int:
    """Rows a night of the model: the credit story at full size, the other two models smaller (a quicker demo)."""
    return ROWS if config.model.kind == "binary" else ROWS // 2


def run_demo(sources: list[ModelSource], fresh: bool, seed: int, log_file: Path) -> None:
    """Run the whole loop for every model; DAG output goes to `log_file`, the story and the tables to the terminal."""
    started = time.monotonic()
    if fresh:
        with output_to(log_file):
            forgotten = start_over()
        if forgotten:
            print(f"starting over: removed {forgotten} earlier demo run(s) from the Airflow metadata DB")
    models = {s.dag_id(""): s.config for s in sources if s.config is not None}
    credit = next((suffix for suffix, c in models.items() if c.model.kind == "binary"), next(iter(models)))
    models = {credit: models[credit], **models}  # the credit story first
    nights = [TRAIN_END + timedelta(days=i + 1) for i in range(NIGHTS)]
    total_days = (nights[-1] - START).days + 1
    names = ", ".join(f"{c.model.registered_name} ({c.model.kind})" for c in models.values())
    print(f"Airflow task logs and MLflow output: {log_file}\n")
    print(f"{len(models)} model(s) in one deployment: {names}")
    print(
        f"1/6 generating {total_days} daily partitions per model, with covariate and concept drift from {DRIFT_START}"
    )
    drift = DriftSpec(start=DRIFT_START, covariate=True, concept=True)
    # labels exist up to the training window; later ones land night by night, label_delay_partitions late
    first_night = TRAIN_END + timedelta(days=1)
    first = {suffix: first_night if suffix == credit else OTHERS_FIRST_NIGHT for suffix in models}
    for suffix, config in models.items():
        with output_to(log_file):
            generate(
                config.data_root,
                START,
                total_days,
                model_rows(config),
                config.label_delay_partitions,
                as_of=first[suffix] - timedelta(days=1),
                seed=seed,
                drift=drift,
                kind=str(config.model.kind),
            )
        print(
            f"    {config.model.registered_name}: {model_rows(config):,} rows a night under {config.data_root}, "
            f"scored from {first[suffix]}"
        )
    with output_to(log_file):
        break_partition(models[credit].data_root, *BAD_NIGHT)
    print(f"    damaged {models[credit].model.registered_name} ds={BAD_NIGHT[0]} on purpose ({BAD_NIGHT[1]})")
    with output_to(log_file):
        uri = init_store(models[credit])
    print(f"2/6 initialising the MLflow store {uri}")
    print("3/6 retrain_model of each model (bootstrap: no champion yet), through Airflow")
    for suffix in models:
        with output_to(log_file):
            boot = run_dag(
                f"retrain_model{suffix}", None, {"window_end": TRAIN_END.isoformat(), "reason": "bootstrap"}, record_run
            )
        if boot.state != "success":
            raise PipelineError(f"retrain_model{suffix} ended {boot.state}: {boot.task_states}; see {log_file}")
        trained = Candidate.model_validate(boot.returns["train_candidate"])
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.metrics.items())
        print(f"    {trained.name} version {trained.version} is champion (held-out {metrics})")
    print(
        f"4/6 batch_scoring of each model for {len(nights)} nights through Airflow; after a night that requests\n"
        "    retraining, the retrain_model run the scheduler would start on that Asset event (gate, then promotion or\n"
        "    rejection)"
    )
    rows: dict[str, list[dict[str, object]]] = {suffix: [] for suffix in models}
    for ds in nights:
        logical = datetime(ds.year, ds.month, ds.day, 2, tzinfo=UTC) + timedelta(days=1)  # the nightly tick
        for suffix, config in models.items():
            if ds < first[suffix]:
                continue
            landed = ds - timedelta(days=config.label_delay_partitions)
            with output_to(log_file):
                write_day(
                    config.data_root,
                    landed,
                    model_rows(config),
                    seed,
                    drift,
                    with_labels=True,
                    with_features=False,
                    kind=str(config.model.kind),
                )
                night = run_dag(f"batch_scoring{suffix}", logical, ledger=record_run)
                requests = retraining_requests(night.run_id)
                retrain = None
                if requests:
                    retrain = run_dag(f"retrain_model{suffix}", None, retrain_params(requests), record_run)
            row = night_row(ds, night, config) | {"retraining": retrain_cell(retrain)}
            rows[suffix].append(row)
            print(
                f"    {row['ds']}  {config.model.registered_name:<15} {row['run']:<7}  {row['validation'][:34]:<34}  "
                f"model {row['model']:<3}  decision {row['decision']:<7}  {row['retraining']}"
            )
    credit_config = models[credit]
    print(
        f"5/6 rollback_model of {credit_config.model.registered_name} (undo the promotion, as an operator would after a "
        "bad night), then rescore the last night"
    )
    with output_to(log_file):
        rollback = run_dag(f"rollback_model{credit}", None, {"reason": "demo: undo the promotion"}, record_run)
        rescored = run_dag(f"batch_scoring{credit}", None, {"ds": nights[-1].isoformat()}, record_run)
        on_request = unpause([f"{base}{suffix}" for suffix in models for base in ("retrain_model", "rollback_model")])
    print("6/6 results\n")
    print(f"Nights of {credit_config.model.registered_name}:\n")
    print_table(rows[credit])
    print(
        "\nIts monitoring history (drift against the champion's reference; AUC estimated by CBPE, realised once labels "
        "land):\n"
    )
    print_table(history_rows(credit_config))
    print(f"\nIts audit log of champion moves (table audit_log in {credit_config.history_url}):\n")
    print_table(
        [
            {
                "when": e.at[:19],
                "action": e.action,
                "from": e.from_version or "-",
                "to": e.to_version,
                "by": e.approved_by,
                "reason": e.reason[:70],
            }
            for e in read_audit(credit_config)
        ]
    )
    version = rescored.returns.get("score_partition", {}).get("model_version", "?")
    print(
        f"\nAfter the rollback ({rollback.state}) ds={nights[-1]} was rescored by v{version}. To return to the "
        "promoted model, trigger rollback_model with target_version set to it."
    )
    print("\nThe overview of the deployment (the monitoring page opens on it):\n")
    print_table([overview_row(config) for config in models.values()])
    print(
        f"\nDemo finished in {time.monotonic() - started:.0f} s. Outputs:\n"
        f"  task logs    {log_file}\n"
        f"  data         {', '.join(str(c.data_root) for c in models.values())}\n"
        f"               (incoming/, predictions/, labels/, quarantine/ and reports/: open drift_overview.html)\n"
        f"  MLflow       {credit_config.tracking_uri}  (UI: make mlflow-ui, then http://127.0.0.1:5000)\n"
        f"  Airflow UI   make airflow-ui, then http://127.0.0.1:8080: a batch_scoring, retrain_model and\n"
        f"               rollback_model DAG per model; 'Model monitoring' in its navigation opens the overview\n"
        f"               (http://127.0.0.1:8080/monitoring/)\n"
        f"               unpaused: {', '.join(on_request) or 'none (already unpaused)'} (they run only when asked);\n"
        f"               batch_scoring stays paused, or its schedule would start tonight's run: unpause it in the UI"
    )


def overview_row(config: PipelineConfig) -> dict[str, object]:
    """One model's line of the overview: the facts the monitoring page's overview shows, as text."""
    facts = model_overview(config)

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return {
        "model": config.model.registered_name,
        "kind": str(config.model.kind),
        "champion": facts.champion,
        "promotions": facts.promotions,
        "rejections": facts.rejections,
        "last night": facts.last_night or "-",
        "decision": facts.decision or "-",
        "metric": config.retraining.metric,
        "estimated": number(facts.estimated),
        "realised": number(facts.realised),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the demo; return the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__)
    parser.add_argument("--config", help=f"pipeline YAML (default: ${CONFIG_ENV_VAR} or the bundled default)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help=f"delete the demo's data ({DEMO_DATA}), MLflow store ({DEMO_MLFLOW}) and the runs earlier demos "
        "started first (other runs of the DAGs stay)",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    log_file = DEMO_LOGS / "airflow-tasks.log"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        environ = dict(os.environ)
        if args.config:
            environ[CONFIG_ENV_VAR] = str(Path(args.config).resolve())
        environ.setdefault(CONFIG_ENV_VAR, str(DEMO_DEPLOYMENT))
        chosen = config_path(environ)
        if args.fresh and chosen.resolve() not in (DEFAULT_CONFIG, DEMO_DEPLOYMENT):
            raise PipelineError(
                f"--fresh deletes data: it is only allowed with the bundled demo config (unset ${CONFIG_ENV_VAR})"
            )
        sources = model_sources(environ)
        foreign = [f for s in sources if s.config for f in foreign_locations(s.config, s.file, environ)]
        if foreign:
            raise PipelineError(
                "the demo writes and deletes only its own folders under var/, and this run would reach elsewhere:\n  "
                + "\n  ".join(foreign)
                + "\nUnset these for the demo (it brings its own sample data); run your own data with the DAGs"
            )
        broken = [s.error for s in sources if s.config is None]
        if broken:
            raise PipelineError("the demo's model configs do not load:\n  " + "\n  ".join(str(b) for b in broken))
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if args.fresh:
            log_file.unlink(missing_ok=True)
        # the library's own log lines go to the same file as Airflow's task logs; the terminal gets the story
        logging.basicConfig(
            level=logging.INFO, filename=log_file, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        os.environ[CONFIG_ENV_VAR] = environ[CONFIG_ENV_VAR]  # the DAG files read it too
        run_demo(sources, args.fresh, args.seed, log_file)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
