"""OpenLineage inputs and outputs of the scoring and training tasks, read from what each task returned.

Airflow's OpenLineage provider emits a START and a COMPLETE event for every task; for a Python task it takes the
datasets from the operator's `inlets` and `outlets` when nothing else reports them. `airflow_adapter.pipeline_task`
sets those on the running task from its typed return value:

- score_partition (`ScoringSummary`): inputs the incoming partition and the model version, output the predictions
  partition;
- train_candidate (`Candidate`): inputs the labelled partitions of the window, output the registered model version.

Datasets follow OpenLineage's naming: `file` + absolute path for local files, `s3://<bucket>` + key for the object
store, and the MLflow registry as `mlflow` + `<tracking store>/models/<name>/<version>` (credentials left out).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Candidate, ScoringSummary
from pipelines.core.paths import INCOMING, LABELS, PREDICTIONS
from pipelines.storage.partitions import partition_dir

MAX_INPUTS = 100  # a long training window names its newest partitions only (events stay small)


def _dataset(location: object) -> tuple[str, str]:
    """(namespace, name) of a file or folder on the data root."""
    text = str(location)
    if text.startswith("s3://"):
        bucket, _, key = text.removeprefix("s3://").partition("/")
        return f"s3://{bucket}", key
    return "file", text


def model_dataset(config: PipelineConfig, name: str, version: str) -> tuple[str, str]:
    """(namespace, name) of a registered model version: the tracking store without credentials, the model path."""
    store = str(config.tracking_uri)
    parts = urlsplit(store)
    if parts.username or parts.password:  # a server URL with a login: named without it
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        store = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return "mlflow", f"{store}/models/{name}/{version}"


def lineage_of(config: PipelineConfig, result: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]] | None:
    """(inputs, outputs) of a task's return value, or None when the task reads and writes no dataset we name."""
    if isinstance(result, ScoringSummary):
        incoming = _dataset(partition_dir(config.data_root, INCOMING, result.ds))
        model = model_dataset(config, result.model_name, result.model_version)
        predictions = _dataset(partition_dir(config.data_root, PREDICTIONS, result.ds))
        return [incoming, model], [predictions]
    if isinstance(result, Candidate):
        days = result.train_days[-MAX_INPUTS:]
        inputs = [_dataset(partition_dir(config.data_root, area, d)) for d in days for area in (INCOMING, LABELS)]
        return inputs, [model_dataset(config, result.name, result.version)]
    return None


def annotate(task: Any, config: PipelineConfig, result: Any) -> None:
    """Set the running task's inlets and outlets to OpenLineage datasets of `result` (no-op for other results)."""
    found = lineage_of(config, result)
    if found is None or task is None:
        return
    from openlineage.client.event_v2 import Dataset

    inputs, outputs = found
    task.inlets = [Dataset(namespace=n, name=p) for n, p in inputs]
    task.outlets = [Dataset(namespace=n, name=p) for n, p in outputs]
