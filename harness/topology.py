"""The distributed topology of docker-compose.yaml, started natively: for the topology test and the distributed bench.

PostgreSQL (the machine's: Airflow's metadata, Celery's results, the history and audit log, MLflow's backend
store; fresh databases, dropped afterwards), Redis (the machine's: a broker database of its own, flushed), moto
in server mode as the S3-compatible object store (a fresh bucket) behind an MLflow tracking server, and the
Airflow api-server, scheduler (CeleryExecutor), dag-processor, triggerer and N Celery workers as separate
processes, each worker with its own empty working directory, HOME and AIRFLOW_HOME. Every process is started
in its own process group and stopped by it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipelines.core.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
COMPONENTS = {  # the compose services and the command each runs
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
}


class ServicesMissing(RuntimeError):
    """PostgreSQL or Redis is not reachable on loopback."""


REPORT_PREFIX = "pipeline"  # the data root's key prefix in the topology's bucket (reports are published beside it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(base: str, procs: dict[str, tuple[subprocess.Popen, Path]], seconds: int = 120) -> None:
    """Poll the api-server's health endpoint; fail with a process's log tail if it exits first."""
    for _ in range(seconds):
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        for name, (proc, log) in procs.items():
            assert proc.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"the api-server at {base} did not become healthy in {seconds} s")


def admin_password(airflow_home: Path) -> str:
    """The simple auth manager's generated password for `admin`."""
    return str(json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())["admin"])


def admin_headers(base: str, airflow_home: Path) -> dict[str, str]:
    """Authorization headers with a fresh JWT for `admin` (POST /auth/token)."""
    response = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": admin_password(airflow_home)})
    return {"authorization": f"Bearer {response.json()['access_token']}"}


def airflow_env(home: Path, config_path: Path, audit_key: str) -> dict[str, str]:
    """Environment for a real Airflow process on `home`, this repository's DAGs and plugins, and a given config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": "airflow.* pipelines.*",
            "PIPELINE_CONFIG": str(config_path),
            "AIRFLOW_VAR_PIPELINE_AUDIT_KEY": audit_key,
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "OMP_WAIT_POLICY": "PASSIVE",
            "ARROW_DEFAULT_MEMORY_POOL": "system",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
    )
    return env


def postgres_admin(sql: str) -> None:
    """Run one statement on the machine's PostgreSQL (127.0.0.1:5432, trust auth) outside a transaction."""
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **PG)  # type: ignore[arg-type]
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@dataclass
class Topology:
    """A running distributed topology: where to reach it and what it started."""

    base: str
    headers: dict[str, str]
    config: PipelineConfig
    airflow_db: str
    bucket: str
    s3: dict[str, str]
    workers: tuple[str, ...]
    folder: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def s3_client(self) -> Any:
        return s3_client(self.s3)


def s3_client(s3: dict[str, str]) -> Any:
    """A boto3 S3 client for the object store at `s3["endpoint_url"]` with its credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _start(name: str, command: list[str], env: dict[str, str], folder: Path, cwd: Path = REPO) -> tuple:
    log = folder / f"{name}.log"
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, log


def _wait_for_http(url: str, proc: subprocess.Popen, log: Path, seconds: int = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the process exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s: {log.read_text()[-3000:]}")


def _stop(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc, _ in procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def check_services() -> None:
    """Raise ServicesMissing unless the machine's PostgreSQL and Redis answer on loopback."""
    try:
        postgres_admin("SELECT 1")
        import redis

        redis.Redis(host="127.0.0.1", port=6379).ping()
    except Exception as exc:
        raise ServicesMissing(
            f"PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and Redis (127.0.0.1:6379) are needed: {exc}"
        ) from exc


@contextmanager
def distributed(
    folder: Path,
    config_path: Path,
    audit_key: str,
    prepare: Callable[[PipelineConfig], None],
    workers: int = 2,
    worker_concurrency: int = 1,
    parallelism: int = 4,
) -> Iterator[Topology]:
    """Start the topology on `folder`; `prepare(config)` fills the data root and registry before Airflow starts."""
    import redis

    check_services()
    db = f"nightly_ml_topology_{os.getpid()}"
    databases = (db, f"{db}_history", f"{db}_mlflow")
    for name in databases:
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        postgres_admin(f"CREATE DATABASE {name}")
    # a broker database of its own, flushed around; a parallel test run names one per worker (tests/conftest.py)
    broker = f"redis://127.0.0.1:6379/{os.environ.get('TOPOLOGY_REDIS_DB') or 1 + os.getpid() % 15}"
    redis.Redis.from_url(broker).flushdb()
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    saved: dict[str, str | None] = {}
    try:
        s3_port, mlflow_port, port = free_port(), free_port(), free_port()
        s3 = {
            "AWS_ACCESS_KEY_ID": "topology",
            "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        procs["object-store"] = _start(
            "object-store",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            {**os.environ, **s3},
            folder,
        )
        _wait_for_http(f"http://127.0.0.1:{s3_port}/", *procs["object-store"])
        topology_s3 = {"endpoint_url": f"http://127.0.0.1:{s3_port}", **s3}
        bucket = f"nightly-ml-{os.getpid()}"
        # the MLflow tracking server: PostgreSQL backend store, artifacts served by it from the object store
        procs["mlflow"] = _start(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}_mlflow",
                "--serve-artifacts",
                "--artifacts-destination",
                f"s3://{bucket}/mlflow-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],  # fmt: skip
            {**os.environ, **s3, "MLFLOW_S3_ENDPOINT_URL": topology_s3["endpoint_url"]},
            folder,
        )
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        s3_client(topology_s3).create_bucket(Bucket=bucket)
        _wait_for_http(f"{tracking_uri}/health", *procs["mlflow"])
        history_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}_history"
        # the components' history (with the audit log), registry, data root and report store: models go through the
        # tracking server; partitions, predictions, reports and quarantine records live in the bucket, and the
        # api-server serves the reports from there: no process shares a disk with another
        urls = {
            "PIPELINE_HISTORY_URL": history_url,
            "PIPELINE_MLFLOW_TRACKING_URI": tracking_uri,
            "PIPELINE_DATA_ROOT": f"s3://{bucket}/{REPORT_PREFIX}",
            "PIPELINE_REPORT_STORE": f"s3://{bucket}/{REPORT_PREFIX}",
            "AWS_ENDPOINT_URL": topology_s3["endpoint_url"],
            **s3,
        }
        # this process writes the data root and reads the predictions too: the object store's variables for its
        # lifetime, given back afterwards
        for name, value in urls.items():
            saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        config = load_config(config_path)
        prepare(config)
        env = airflow_env(folder / "airflow", config_path, audit_key) | urls
        env |= {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
            # Celery records which worker ran each task (celery_taskmeta.worker)
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": '{"result_extended": true}',
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        for name, command in COMPONENTS.items():
            procs[name] = _start(name, [sys.executable, "-m", "airflow", *command], env, folder)
        names = tuple(f"airflow-worker-{n}" for n in range(1, workers + 1))
        for name in names:
            # a worker needs only its configuration: its own empty working directory, HOME and AIRFLOW_HOME
            own = folder / name
            for part in ("cwd", "home", "airflow"):
                (own / part).mkdir(parents=True)
            worker_env = env | {
                "HOME": str(own / "home"),
                "AIRFLOW_HOME": str(own / "airflow"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            command = ["airflow", "celery", "worker", "--concurrency", str(worker_concurrency)]
            command += ["--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
            procs[name] = _start(name, [sys.executable, "-m", *command], worker_env, folder, cwd=own / "cwd")
        wait_until_healthy(base, procs)
        yield Topology(
            base=base,
            headers=admin_headers(base, folder / "airflow"),
            config=config,
            airflow_db=db,
            bucket=bucket,
            s3=topology_s3,
            workers=names,
            folder=folder,
            procs={name: proc for name, (proc, _) in procs.items()},
            logs={name: log for name, (_, log) in procs.items()},
        )
    finally:
        _stop(procs)
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        from pipelines.storage import history

        history.dispose(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}_history")  # its database goes next
        redis.Redis.from_url(broker).flushdb()
        for name in databases:
            postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def runs(topology: Topology, dag_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{topology.base}/api/v2/dags/{dag_id}/dagRuns", headers=topology.headers, timeout=10)
    return list(response.json().get("dag_runs", [])) if response.status_code == 200 else []


def wait_for_run(topology: Topology, dag_id: str, predicate: Callable[[dict], bool], seconds: int = 600) -> dict:
    """Wait until a finished run of `dag_id` matches `predicate`; fail early if a component exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, proc in topology.procs.items():
            assert proc.poll() is None, f"{name} exited: {topology.logs[name].read_text()[-3000:]}"
        done = [r for r in runs(topology, dag_id) if predicate(r) and r["state"] in ("success", "failed")]
        if done:
            return done[0]
        time.sleep(1)
    raise AssertionError(
        f"no finished {dag_id} run: {runs(topology, dag_id)}\n{topology.logs['airflow-scheduler'].read_text()[-4000:]}"
    )
