"""Every DAG file imports cleanly, cheaply and without touching a database or the network."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, airflow_env, write_config

DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dags")
    return airflow_env(folder / "airflow", write_config(folder))


@pytest.fixture(scope="module")
def dagbag(env, tmp_path_factory):
    """Load the DAG folder with Airflow's own DagBag in a fresh process; return ids, import errors and settings."""
    script = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "file": dag.fileloc, "tags": sorted(dag.tags), "doc": bool(dag.doc_md),
        "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries} for t in dag.tasks},
        "params": {k: v.schema for k, v in dag.params.items()},
        "param_defaults": {k: {"default": v.value} for k, v in dag.params.items()},
        "start_date": dag.start_date.isoformat(),
    }
# as the dag-processor stores it and the scheduler reads it back: the run ids a scheduled and a manual run get
from datetime import datetime, timezone
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.types import DagRunType
stored = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["batch_scoring"])).timetable
after = datetime(2026, 10, 15, 12, tzinfo=timezone.utc)
interval = stored.infer_manual_data_interval(run_after=after)
out["batch_scoring_run_ids"] = {
    "timetable": type(stored).__module__ + "." + type(stored).__name__,
    "interval_start": interval.start.isoformat(),
    "scheduled": stored.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=interval.end, data_interval=interval),
    "manual": stored.generate_run_id(run_type=DagRunType.MANUAL, run_after=after, data_interval=interval),
}
print("JSON" + json.dumps(out))
""" % str(REPO / "dags")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line[4:] for line in out.stdout.splitlines() if line.startswith("JSON")))


@pytest.fixture(scope="module")
def parse_report(env):
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "parse_dag_files.py"), str(REPO / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag["errors"] == {}
    assert {"batch_scoring", "retrain_model"} <= set(dagbag["dags"])


def test_a_scheduled_scoring_run_is_named_by_the_night_it_scores(dagbag):
    """The run id a scheduled batch_scoring run gets from the timetable the scheduler reads back (serialized as the
    dag-processor stores it) ends with its night: the day its data interval begins, which partition_date scores."""
    ids = dagbag["batch_scoring_run_ids"]
    assert ids["timetable"] == "pipelines.surfaces.airflow_adapter.NightTimetable"
    night = ids["interval_start"][:10]
    assert ids["scheduled"].startswith("scheduled__") and ids["scheduled"].endswith(f"__ds-{night}")
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", ids["scheduled"])  # Airflow's allowed_run_id_pattern
    assert "__ds-" not in ids["manual"]  # a manual run's night may be its `ds` Param, which the timetable cannot see


def test_without_the_plugin_batch_scoring_still_loads_and_keeps_airflows_run_names(env, tmp_path):
    """A deployment whose plugins folder lacks plugins/ must not lose the DAG to "Timetable class ... is not
    registered": it is stored with Airflow's own timetable, and the parse log says what is missing."""
    script = """
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=%r)
stored = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["batch_scoring"])).timetable
print("JSON" + json.dumps({"errors": list(bag.import_errors), "timetable": type(stored).__name__}))
""" % str(REPO / "dags")
    empty = tmp_path / "plugins"
    empty.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env | {"AIRFLOW__CORE__PLUGINS_FOLDER": str(empty)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line[4:] for line in out.stdout.splitlines() if line.startswith("JSON")))
    assert result == {"errors": [], "timetable": "CronDataIntervalTimetable"}
    assert "the monitoring plugin is not loaded" in out.stderr + out.stdout


def test_dag_id_is_the_file_name(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert Path(dag["file"]).stem == dag_id


def test_every_dag_has_tags_docs_owner_and_retries(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert dag["tags"], dag_id
        assert dag["doc"], dag_id
        for task_id, task in dag["tasks"].items():
            assert task["owner"] not in ("", "airflow"), f"{dag_id}.{task_id} has no owner"
    # Retried: steps whose failure can be transient (a lost worker, a full disk freed). Never retried: the sensor
    # (it times out on its own), validation (bad data stays bad) and every alias move or refusal (a retry could
    # audit a decision twice); rollback is an operator action, rerun by the operator.
    never = {
        "batch_scoring": {"wait_for_partition", "validate_partition"},
        "retrain_model": {
            "approve_promotion",
            "reject_candidate",
            "promote_candidate",
            "settle_approval",
            "learn_from_rejection",  # rebaselines and audits: a retry could do it twice
        },
        "rollback_model": set(dagbag["dags"]["rollback_model"]["tasks"]),
    }
    for dag_id, dag in dagbag["dags"].items():
        retried = {t for t, task in dag["tasks"].items() if task["retries"] >= 1}
        assert retried == set(dag["tasks"]) - never[dag_id], dag_id
    assert dagbag["dags"]["batch_scoring"]["tasks"]["score_partition"]["retries"] == 2


@pytest.mark.parametrize("name", DAG_FILES)
def test_parsing_opens_no_connection_and_is_cheap(parse_report, name):
    entry = parse_report[name]
    assert entry["error"] is None
    assert entry["attempts"] == []
    assert entry["dag_ids"] == [Path(name).stem]
    # cheap: the DAG processor parses every file often; the libraries a task needs load in the task, not here
    assert entry["heavy_imports"] == [], f"parsing {name} loaded {entry['heavy_imports']}"


def test_dag_files_stay_thin():
    heavy = ("pandas", "numpy", "sklearn", "mlflow", "evidently", "great_expectations", "pyarrow", "joblib")
    for name in DAG_FILES:
        for line in (REPO / "dags" / name).read_text().splitlines():
            if line.startswith(("import ", "from ")):
                assert not any(line.split()[1].startswith(h) for h in heavy), f"{name}: {line}"


def test_trigger_params_only_accept_dates(env):
    script = """
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamsDict
bag = DagBag(dag_folder=%r)
out = {}
for dag_id, key in (("batch_scoring", "ds"), ("retrain_model", "window_end")):
    for value in ("2026-10-01", None, "../../etc/passwd", "2026-13-01", "yesterday", "2026-10-01; rm -rf /"):
        params = ParamsDict(bag.dags[dag_id].params)
        try:
            params[key] = value
            params.validate()
            out[f"{dag_id}:{value}"] = "ok"
        except Exception as exc:
            out[f"{dag_id}:{value}"] = type(exc).__name__
print("JSON" + json.dumps(out))
""" % str(REPO / "dags")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    verdicts = json.loads(next(line[4:] for line in out.stdout.splitlines() if line.startswith("JSON")))
    for dag_id in ("batch_scoring", "retrain_model"):
        assert verdicts[f"{dag_id}:2026-10-01"] == "ok"
        assert verdicts[f"{dag_id}:None"] == "ok"
        for bad in ("../../etc/passwd", "2026-13-01", "yesterday", "2026-10-01; rm -rf /"):
            assert verdicts[f"{dag_id}:{bad}"] == "ParamValidationError", (dag_id, bad)


def _params_read(dag_file: Path) -> set[str]:
    """The Param names a DAG file's tasks read: `run.params.x`, an attribute of the typed Params a task is given."""
    import ast

    return {
        node.attr
        for node in ast.walk(ast.parse(dag_file.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "params"
    }


def _params_models(dag_file: Path) -> set[str]:
    """The Params models a DAG file's tasks are adapted with: `@pipeline_task(ScoringParams)`."""
    import ast

    return {
        node.args[0].id
        for node in ast.walk(ast.parse(dag_file.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "pipeline_task"
        and node.args
        and isinstance(node.args[0], ast.Name)
    }


def test_every_declared_param_is_read_by_a_task(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        read = _params_read(Path(dag["file"]))
        assert set(dag["params"]) == read, f"{dag_id}: declared {sorted(dag['params'])}, read {sorted(read)}"


def test_each_dag_reads_its_params_as_one_model_that_matches_the_declared_params(dagbag):
    """One pydantic model per DAG: its fields are the DAG's Params, and every Param's default fits the model."""
    from pipelines.core import contracts

    for dag_id, dag in dagbag["dags"].items():
        models = _params_models(Path(dag["file"]))
        assert len(models) == 1, f"{dag_id} reads its Params through {sorted(models)}: one model per DAG"
        model = getattr(contracts, models.pop())
        assert set(model.model_fields) == set(dag["params"]), dag_id
        defaults = {name: schema.get("default") for name, schema in dag["param_defaults"].items()}
        if dag_id != "rollback_model":  # its reason has no valid default: a person must give one
            model.model_validate(defaults)


def test_a_conf_that_does_not_fit_the_params_model_fails_the_first_task_and_names_the_param():
    from pipelines.core.contracts import RetrainParams, ScoringParams
    from pipelines.core.errors import TriggerParamsError
    from pipelines.surfaces.airflow_adapter import read_params

    assert read_params(ScoringParams, {"ds": "2026-10-01", "force_retrain": False}, "d").ds.isoformat() == "2026-10-01"
    with pytest.raises(TriggerParamsError, match="ds: .*batch_scoring|batch_scoring.*ds"):
        read_params(ScoringParams, {"ds": "../../etc/passwd"}, "batch_scoring")
    with pytest.raises(TriggerParamsError, match="window_partitions"):
        read_params(RetrainParams, {"window_partitions": 1}, "retrain_model")


def _readme_dag_table() -> list[list[str]]:
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("| DAG | when | Params (UI trigger) | tasks |") :].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:]]
    return [[re.findall(r"`([^`]+)`", cell) for cell in row] for row in rows]


def test_every_dag_task_and_param_the_readme_names_exists(dagbag):
    import re

    rows = _readme_dag_table()
    assert {row[0][0] for row in rows} == set(dagbag["dags"])
    for (dag_id,), _, params, tasks in rows:
        dag = dagbag["dags"][dag_id]
        assert set(params) == set(dag["params"]), dag_id
        named = {t for t in tasks if re.fullmatch(r"[a-z][a-z0-9_]*", t)}
        assert named and named <= set(dag["tasks"]), f"{dag_id}: {sorted(named - set(dag['tasks']))} are not tasks"


def test_no_trigger_of_batch_scoring_can_end_before_its_start_date(dagbag):
    """Airflow ends a run before start_date "success" with no task run: the DAG's start_date precedes any night,
    and the tasks refuse nights before the config's start_date or the data (tests/pipelines/test_lake.py)."""
    assert dagbag["dags"]["batch_scoring"]["start_date"] == "2000-01-01T00:00:00+00:00"


def test_parsing_with_an_object_store_data_root_touches_no_storage(env):
    """pyarrow's S3 client connects from C++, where the parse guard's socket patch cannot see it: point the data root
    at an endpoint that records every connection, and parse every DAG file."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def record() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            accepted.append(connection)
            connection.close()

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    storage = {
        "PIPELINE_DATA_ROOT": "s3://lake-bucket/nightly",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "tests",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).parent / "parse_dag_files.py"), str(REPO / "dags")],
            env=env | storage,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(entry["error"] is None and entry["attempts"] == [] for entry in report.values()), report
    assert accepted == [], f"parsing the DAG files opened {len(accepted)} connection(s) to the object store"
