"""The OpenMetrics text of a deployment, read back with prometheus_client's own parser (what Prometheus accepts)."""

from datetime import UTC, datetime

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pipelines.core.config import ModelSource, load_config
from pipelines.core.contracts import AuditAction, AuditEntry, NightRecord
from pipelines.governance import audit
from pipelines.storage import history
from pipelines.surfaces.metrics import render_metrics
from tests.conftest import write_config


def _samples(text: bytes) -> dict[tuple[str, tuple], float]:
    families = list(text_string_to_metric_families(text.decode()))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _night(ds, version="1", success=True, **facts):
    return NightRecord(
        ds=ds,
        model_name="credit_default",
        model_version=version,
        validation_success=success,
        validation_failures=[] if success else ["column 'x' is missing"],
        **facts,
    )


@pytest.fixture
def deployment(tmp_path):
    config = load_config(write_config(tmp_path))
    history.record_night(config, _night("2026-10-01", rows=5000, drift_share=0.1, validation_warnings=["moved"]))
    history.record_night(config, _night("2026-10-02", success=False, rows=12))
    history.record_night(
        config,
        _night(
            "2026-10-03",
            rows=4000,
            drift_share=0.3,
            drifted_columns=["a", "b", "c"],
            metric="roc_auc",
            estimated_metric=0.74,
            realised_metric=0.71,
            realised_metrics={"roc_auc": 0.71, "interval": {"metric": "roc_auc", "low": 0.68, "high": 0.74}},
            scoring_rows_per_s=250_000.0,
            task_seconds={"validate_partition": 1.5, "score_partition": 2.0},
            decision="retrain",
        ),
    )
    with audit.audit_lock(config):
        audit.append(config, AuditEntry(action=AuditAction.BOOTSTRAP, model="credit_default", to_version="1"))
        audit.append(
            config, AuditEntry(action=AuditAction.REJECT, model="credit_default", from_version="1", to_version="2")
        )
    broken = ModelSource(file=tmp_path / "broken.yaml", suffix="__broken", error="bad yaml")
    return config, [ModelSource(file=tmp_path / "pipeline.yaml", suffix="", config=config), broken]


def test_the_endpoint_text_parses_and_holds_each_fact_of_the_newest_night(deployment):
    config, sources = deployment
    text = render_metrics(sources, {"retrain_model": 2})
    assert text.endswith(b"# EOF\n")
    got = _samples(text)
    m = (("model", "credit_default"),)
    v = (("model", "credit_default"), ("version", "1"))
    assert (
        got[("nightly_ml_model_config_ok", m)] == 1 and got[("nightly_ml_model_config_ok", (("model", "broken"),))] == 0
    )
    assert got[("nightly_ml_model_info", (("champion", "1"), ("kind", "binary"), ("model", "credit_default")))] == 1
    assert got[("nightly_ml_rows_scored", v)] == 4000
    assert got[("nightly_ml_drift_share", v)] == 0.3 and got[("nightly_ml_drifted_columns", v)] == 3
    assert got[("nightly_ml_estimated_metric", (("metric", "roc_auc"), *v))] == 0.74
    assert got[("nightly_ml_realised_metric", (("metric", "roc_auc"), *v))] == 0.71
    assert got[("nightly_ml_realised_metric_low", (("metric", "roc_auc"), *v))] == 0.68
    assert got[("nightly_ml_realised_metric_high", (("metric", "roc_auc"), *v))] == 0.74
    assert got[("nightly_ml_partitions", (("model", "credit_default"), ("status", "quarantined")))] == 1
    assert got[("nightly_ml_partitions", (("model", "credit_default"), ("status", "warned")))] == 1
    assert got[("nightly_ml_partitions", (("model", "credit_default"), ("status", "scored")))] == 1
    assert got[("nightly_ml_decision", (("decision", "retrain"), ("model", "credit_default")))] == 1
    assert got[("nightly_ml_stage_seconds", (("model", "credit_default"), ("stage", "score_partition")))] == 2.0
    assert got[("nightly_ml_rows_per_second", v)] == 250_000.0
    assert got[("nightly_ml_last_night_timestamp_seconds", m)] == datetime(2026, 10, 3, tzinfo=UTC).timestamp()
    assert got[("nightly_ml_pending_approvals", m)] == 2
    assert got[("nightly_ml_audit_chain_ok", m)] == 1 and got[("nightly_ml_rejected_candidates", m)] == 1
    assert got[("nightly_ml_episode_open", (("model", "credit_default"), ("state", "none")))] == 0


def test_a_tampered_audit_log_shows_as_a_failed_chain(deployment):
    import sqlalchemy as sa

    config, sources = deployment
    with audit.database(config).begin() as conn:  # the trigger refuses UPDATE: drop it first, as an attacker would
        conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        conn.execute(sa.text("UPDATE audit_log SET entry = replace(entry, '\"2\"', '\"9\"')"))
    got = _samples(render_metrics(sources))
    assert got[("nightly_ml_audit_chain_ok", (("model", "credit_default"),))] == 0


def test_labels_stay_bounded_whatever_the_history_holds(deployment):
    config, sources = deployment
    for day in range(4, 29):  # many nights, many drifted column names, long reasons: none become a label
        history.record_night(
            config,
            _night(
                f"2026-10-{day:02d}", rows=10, drifted_columns=[f"col{day}_{i}" for i in range(50)], drift_share=1.0
            ),
        )
    families = list(text_string_to_metric_families(render_metrics(sources).decode()))
    series = sum(len(f.samples) for f in families)
    assert series < 60  # a fixed set per model, not per night or column
    assert not any("col" in value for f in families for s in f.samples for value in s.labels.values())


def test_the_dashboards_and_alert_rules_query_only_metrics_the_endpoint_serves(deployment):
    import json
    import re

    import yaml

    from tests.conftest import REPO

    _, sources = deployment
    families = list(text_string_to_metric_families(render_metrics(sources).decode()))
    served = {f.name for f in families} | {s.name for f in families for s in f.samples}
    queries = []
    for dashboard in sorted((REPO / "include/grafana/dashboards").glob("*.json")):
        panels = json.loads(dashboard.read_text())["panels"]
        queries += [t["expr"] for p in panels for t in p["targets"]]
        assert all(t["datasource"]["uid"] == "nightly-ml-prometheus" for p in panels for t in p["targets"])
    rules = yaml.safe_load((REPO / "include/prometheus/alerts.yml").read_text())
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for q in queries for name in re.findall(r"\bnightly_ml_[a-z_]+", q)}
    assert len(queries) >= 20 and used, queries
    assert used <= served, sorted(used - served)
    datasource = yaml.safe_load((REPO / "include/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "nightly-ml-prometheus"
    scrape = yaml.safe_load((REPO / "include/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/monitoring/metrics" and scrape["authorization"]["type"] == "Bearer"
