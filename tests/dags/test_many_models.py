"""Many models in one deployment: PIPELINE_CONFIG names a folder, each *.yaml is a model with its own DAGs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.core.config import CONFIG_ENV_VAR, config_for_dag, load_config, model_sources
from pipelines.core.errors import ConfigError
from tests.conftest import REPO, airflow_env, write_config

SCRIPT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
print("JSON" + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d: {"tags": sorted(dag.tags), "tasks": sorted(t.task_id for t in dag.tasks), "doc": dag.doc_md or ""}
             for d, dag in bag.dags.items()},
}))
"""


def _model(folder: Path, stem: str, kind: str | None = None, **model: object) -> Path:
    path = write_config(folder, f"{stem}.yaml", kind=kind)
    raw = yaml.safe_load(path.read_text())
    raw["data_root"] = str(folder / "data" / stem)
    raw["model"] |= {"registered_name": stem, **model}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    configs = folder / "models"
    configs.mkdir()
    _model(configs, "credit")
    _model(configs, "tickets", "multiclass")
    _model(configs, "demand", "regression", trainer="tests.user_code.trainers:linear")
    _model(configs, "vendor", external=True, reference={"first": "2026-09-01", "last": "2026-09-07"})
    (configs / "broken.yaml").write_text("data_root: /x\nmodel: [not, a, mapping\n")
    (configs / "README.txt").write_text("not a model")
    return folder, configs


def test_each_model_gets_its_own_dags_and_a_broken_yaml_breaks_only_its_own(models):
    folder, configs = models
    env = airflow_env(folder / "airflow", configs)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT % str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    bag = json.loads(next(line[4:] for line in out.stdout.splitlines() if line.startswith("JSON")))
    assert bag["errors"] == {}  # no DAG file fails: the other models' DAGs all load
    dags = bag["dags"]
    for stem in ("credit", "tickets", "demand", "vendor"):
        assert f"batch_scoring__{stem}" in dags and f"rollback_model__{stem}" in dags
        assert f"model:{stem}" in dags[f"batch_scoring__{stem}"]["tags"]
    assert {"retrain_model__credit", "retrain_model__tickets", "retrain_model__demand"} <= set(dags)
    assert "retrain_model__vendor" not in dags  # an external model without a trainer is never retrained here
    for base in ("batch_scoring", "retrain_model", "rollback_model"):
        broken = dags[f"{base}__broken"]
        assert "broken-config" in broken["tags"] and broken["tasks"] == ["config_error"]
        assert "broken.yaml" in broken["doc"] and "not valid YAML" in broken["doc"]
    assert not any(d in dags for d in ("batch_scoring", "retrain_model", "rollback_model"))


def test_model_sources_refuse_a_name_or_data_root_two_files_share(tmp_path):
    configs = tmp_path / "models"
    configs.mkdir()
    _model(configs, "a")
    twin = _model(configs, "b")
    raw = yaml.safe_load(twin.read_text())
    raw["model"]["registered_name"] = "a"
    twin.write_text(yaml.safe_dump(raw))
    (configs / "bad name!.yaml").write_text(
        _model(configs, "c").read_text().replace("registered_name: c", "registered_name: d")
    )
    sources = {s.file.name: s for s in model_sources({CONFIG_ENV_VAR: str(configs)})}
    assert sources["a.yaml"].config is not None and sources["c.yaml"].config is not None
    assert "registered_name 'a' is already used by a.yaml" in sources["b.yaml"].error
    assert "file name may hold only" in sources["bad name!.yaml"].error
    with pytest.raises(ConfigError, match="folder of model configs"):
        load_config(configs)
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        model_sources({CONFIG_ENV_VAR: str(empty)})


def test_a_task_of_a_models_dag_loads_that_models_config(models, monkeypatch):
    _, configs = models
    monkeypatch.setenv(CONFIG_ENV_VAR, str(configs))
    from pipelines.surfaces.airflow_adapter import model_dags

    built: dict[str, str] = {}
    model_dags(
        "batch_scoring",
        lambda dag_id, config: built.update({dag_id: config.model.registered_name}),
        [s for s in model_sources() if s.config is not None],
    )
    assert built == {f"batch_scoring__{n}": n for n in ("credit", "demand", "tickets", "vendor")}
    assert config_for_dag("batch_scoring__tickets").model.kind == "multiclass"
    assert config_for_dag("batch_scoring__tickets").page_key == "tickets"
    assert config_for_dag("batch_scoring__demand").model.trainer == "tests.user_code.trainers:linear"


def test_alerts_name_the_model_and_link_its_own_page(models, monkeypatch):
    from pipelines.surfaces import alerts

    _, configs = models
    monkeypatch.setenv(CONFIG_ENV_VAR, str(configs))
    tickets = next(s.config for s in model_sources() if s.suffix == "__tickets")
    assert tickets.page_key == "tickets"
    alert = alerts.quarantine_alert(tickets, "2026-09-03", ["broken"], 10, "http://run")
    assert alert.subject.startswith("[tickets]")
    assert alert.links["Monitoring"] == f"{tickets.alerts.base_url}/monitoring/model/tickets/"
    single = load_config(write_config(configs.parent, "single.yaml"))
    assert (
        alerts.quarantine_alert(single, "2026-09-03", ["broken"], 10, "r").links["Monitoring"].endswith("/monitoring/")
    )


def test_the_retraining_alert_of_an_external_model_says_nothing_retrains_it_here(models, monkeypatch):
    from pipelines.core.contracts import Decision
    from pipelines.surfaces import alerts

    _, configs = models
    monkeypatch.setenv(CONFIG_ENV_VAR, str(configs))
    found = {s.suffix: s.config for s in model_sources() if s.config is not None}
    decision = Decision(
        retrain=True, reasons=["drift"], ds="2026-09-10", model_version="1", request=True, alert="opened"
    )
    vendor = alerts.retrain_decision_alert(found["__vendor"], decision, "r")
    assert "nothing retrains it here" in vendor.text() and "retrain_model runs" not in vendor.text()
    assert (
        "retrain_model runs on this request" in alerts.retrain_decision_alert(found["__credit"], decision, "r").text()
    )
