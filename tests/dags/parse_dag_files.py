"""Import each DAG file the way a DAG processor would, with network and database access forbidden.

Prints one JSON object: per file, parse seconds, DAG ids, any connection or query attempted, and the heavy
libraries (the ones a task needs, never the parse) that importing it loaded.
"""

import importlib.util
import json
import socket
import sqlite3
import sys
import time
from pathlib import Path

import airflow.sdk  # noqa: F401  (a DAG processor has Airflow imported already)
from sqlalchemy import event
from sqlalchemy.engine import Engine

attempts: list[str] = []
# what tasks load; pyarrow is not here: the config module imports it (for the s3:// data root), though loading a
# config reads no data
HEAVY = ("pandas", "sklearn", "scipy", "mlflow", "evidently", "great_expectations", "joblib", "matplotlib", "treelite")


def _forbid(kind):
    def refuse(*args, **kwargs):
        attempts.append(f"{kind}: {args[1:] if len(args) > 1 else args}")
        raise ConnectionRefusedError(f"{kind} is forbidden while a DAG file is parsed")

    return refuse


socket.socket.connect = _forbid("socket connect")
socket.create_connection = _forbid("socket create_connection")
sqlite3.connect = _forbid("sqlite3 connect")
event.listen(Engine, "before_cursor_execute", lambda *a, **k: attempts.append(f"sql: {a[2]}"))
event.listen(Engine, "connect", lambda *a, **k: attempts.append("sqlalchemy connect"))

report = {}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    from airflow.sdk.definitions._internal.contextmanager import DagContext

    DagContext.autoregistered_dags.clear()
    before = len(attempts)
    loaded = set(sys.modules)
    started = time.perf_counter()
    name = f"dagfile_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    DagContext.current_autoregister_module_name = name
    error = None
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # reported, so the test names the file and the cause
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    dag_ids = sorted(dag.dag_id for dag, _ in DagContext.autoregistered_dags)
    heavy = sorted({m.split(".")[0] for m in set(sys.modules) - loaded} & set(HEAVY))
    report[path.name] = {
        "seconds": seconds,
        "dag_ids": dag_ids,
        "attempts": attempts[before:],
        "error": error,
        "heavy_imports": heavy,
    }
print(json.dumps(report))
