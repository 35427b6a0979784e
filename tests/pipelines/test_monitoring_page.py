"""The monitoring page's facts: one row per night, what each request led to, chart data that cannot act."""

import json
import re

from pipelines.core.contracts import Episode, NightRecord
from pipelines.storage import episodes, history
from pipelines.surfaces import monitoring_page
from pipelines.surfaces.monitoring_page import read_quarantine_record, render_page, static_asset, version_changes

SCRIPT = "</script><script>document.title='PWNED'</script>"


def _night(config, ds: str, version: str, **facts) -> None:
    facts = {
        "rows": 100,
        "validation_success": True,
        "validation_failures": [],
        "drift_share": 0.1,
        "drifted_columns": [],
        "reports": {},
        "airflow_run_id": f"scheduled__{ds}",
    } | facts
    history.record_night(
        config, NightRecord(ds=ds, model_name=config.model.registered_name, model_version=version, **facts)
    )


def _chart_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page).group(1))


def test_a_rescored_night_is_one_row_and_its_superseded_record_is_folded_under_it(config):
    _night(config, "2026-09-01", "1", decision="keep")
    _night(config, "2026-09-02", "2", decision="keep", drift_share=0.5)  # promoted v2 scored it ...
    _night(config, "2026-09-02", "1", decision="retrain", drift_share=0.3)  # ... then a rollback rescored it
    page = render_page(config, "/monitoring")
    rows = re.findall(r'<tr data-status="[^"]*" data-decision="([^"]*)"><td data-sort="([^"]*)"', page)
    assert rows == [("retrain", "2026-09-02"), ("keep", "2026-09-01")]  # newest first, the rescoring's record
    assert "1 superseded</summary><ul><li>v2: passed, keep, drift share 0.50</li>" in page
    assert '<a href="/dags/batch_scoring/runs/scheduled__2026-09-02">Airflow run</a>' in page
    assert [e["label"] for e in _chart_data(page)["events"]] == ["version change v2", "version change v1"]


def test_version_changes_are_named_by_the_audit_log_s_move():
    class Move:
        def __init__(self, action: str, to: str) -> None:
            self.action, self.to_version = action, to

    moves = [Move("bootstrap", "1"), Move("promote", "2"), Move("rollback", "1")]
    order = [("2026-09-01", "1"), ("2026-09-02", "1"), ("2026-09-03", "2"), ("2026-09-03", "1"), ("2026-09-04", "1")]
    events = version_changes(order, moves, {"2026-09-02", "2026-09-03", "2026-09-04"})
    assert events == [
        {"ds": "2026-09-03", "label": "promote v2", "kind": "promote"},
        {"ds": "2026-09-03", "label": "rollback v1", "kind": "rollback"},
    ]
    assert version_changes(order, moves, {"2026-09-04"}) == []  # a change outside the charted nights is not drawn


def test_each_request_shows_what_the_run_it_started_did_linked_to_that_run(config):
    _night(config, "2026-09-05", "1", decision="retrain", episode_id=1, request_outcome="episode 1: requested")
    _night(config, "2026-09-06", "1", decision="retrain", episode_id=1, request_outcome="episode 1: held")

    def opened(_):
        return Episode(
            model_name=config.model.registered_name,
            opened_ds="2026-09-05",
            request_ds="2026-09-05",
            outcome="the requested run could not train yet: only 2 labelled partitions",
        )

    episodes.change_open(config, opened)  # batch_scoring's own change: no run result yet
    assert history.night(config, "2026-09-05", config.model.registered_name, "1")["request_result"] is None
    episodes.change_open(config, lambda ep: ep, run_id="asset_triggered__2026-09-06T02:00")
    page = render_page(config, "/monitoring", suffix="__credit")
    assert (
        '→ the requested run could not train yet: only 2 labelled partitions (<a href="/dags/retrain_model__credit/'
        'runs/asset_triggered__2026-09-06T02%3A00">retraining run</a>)'
    ) in page
    assert page.count("→ ") == 1  # only the night that requested shows the run's result


def test_chart_data_and_names_from_the_data_cannot_end_the_script_block(config):
    stats = {SCRIPT: {"statistic": 0.4, "threshold": 0.1, "kind": "distance", "method": "wasserstein", "drifted": True}}
    _night(config, "2026-09-07", "1", drifted_columns=[SCRIPT], drift_stats=stats, validation_warnings=[SCRIPT])
    page = render_page(config, "/monitoring")
    assert SCRIPT not in page and "PWNED'</script>" not in page
    assert page.count("<script") == 3  # the chart data (JSON, never run), plotly.js and the page's script
    data = _chart_data(page)
    assert data["heat"]["columns"] == ["&lt;/script&gt;&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;"]
    assert data["heat"]["z"] == [[4.0]]  # the statistic against its threshold


def test_the_page_serves_only_its_own_script_and_the_installed_plotly_js():
    assert static_asset(monitoring_page.plotly_name()).startswith(b"/**\n* plotly.js v")
    assert b"chart-data" in static_asset(monitoring_page.PAGE_SCRIPT)
    assert static_asset("../../pipelines/core/config.py") is None and static_asset("plotly.min.js") is None


def test_a_quarantine_record_is_read_only_from_the_night_s_folder(config):
    folder = config.work_root / "quarantine" / "ds=2026-09-08"
    folder.mkdir(parents=True)
    (folder / "validation.json").write_text('{"reason": "required column missing"}')
    assert json.loads(read_quarantine_record(config, "ds=2026-09-08"))["reason"] == "required column missing"
    assert read_quarantine_record(config, "ds=2026-09-09") is None
    assert read_quarantine_record(config, "../quarantine/ds=2026-09-08") is None


def test_lineage_names_the_model_store_without_its_login(config):
    from pipelines.surfaces.lineage import model_dataset

    assert model_dataset(config, "m", "3") == ("mlflow", f"{config.tracking_uri}/models/m/3")
    server = config.mlflow.model_copy(update={"tracking_uri": "https://ml:s3cret@mlflow.example.test:5000/api"})
    remote = config.model_copy(update={"mlflow": server})
    assert model_dataset(remote, "m", "3") == ("mlflow", "https://mlflow.example.test:5000/api/models/m/3")


def test_a_night_with_missing_or_infinite_numbers_still_renders_its_charts(config):
    stats = {"age": {"statistic": float("inf"), "threshold": 0.1, "kind": "distance", "method": "wasserstein"}}
    _night(config, "2026-09-10", "1", drift_share=float("nan"), drift_stats=stats, estimated_metric=float("nan"))
    _night(config, "2026-09-11", "1", drift_share=0.2, drift_stats=stats, estimated_metric=float("inf"))
    data = _chart_data(render_page(config, "/monitoring"))
    assert data["drift_share"] == [None, 0.2] and data["estimated"] == [None, None]
    assert data["heat"]["z"] == [[None, None]]


def test_the_overview_facts_are_the_audit_log_s_champion_and_the_newest_record(config):
    """The overview page and the demo's closing table read one set of facts: the champion the audit log names,
    its moves, and the night's newest record (a rescoring's), whose status says quarantined or retrain."""
    import sqlalchemy as sa

    from harness.demo import overview_row
    from pipelines.core.contracts import AuditAction, AuditEntry
    from pipelines.governance import audit

    assert monitoring_page.model_overview(config).last_night is None  # no night yet, no audit entry
    with audit.audit_lock(config):
        audit.append(
            config, AuditEntry(action=AuditAction.BOOTSTRAP, model=config.model.registered_name, to_version="1")
        )
        for action, old, new in [("promote", "1", "2"), ("rollback", "2", "1"), ("reject", "1", "3")]:
            entry = AuditEntry(action=action, model=config.model.registered_name, from_version=old, to_version=new)
            audit.append(config, entry)
    _night(config, "2026-09-01", "1", decision="keep", realised_metric=0.71, metric=config.retraining.metric)
    _night(config, "2026-09-02", "2", decision="keep", estimated_metric=0.8, metric=config.retraining.metric)
    _night(config, "2026-09-02", "1", decision="retrain", estimated_metric=0.6, metric=config.retraining.metric)
    facts = monitoring_page.model_overview(config)
    assert (facts.champion, facts.promotions, facts.rejections) == ("v1", 1, 1)  # the rollback's v1, not v3
    assert (facts.last_night, facts.status, facts.decision) == ("2026-09-02", "retrain requested", "retrain")
    assert (facts.estimated, facts.realised) == (0.6, 0.71)  # the rescoring's estimate; the newest realised value
    row = overview_row(config)
    assert (row["champion"], row["last night"], row["estimated"], row["realised"]) == (
        "v1",
        "2026-09-02",
        "0.600",
        "0.710",
    )
    _night(config, "2026-09-03", "1", validation_success=False, decision=None)
    assert monitoring_page.model_overview(config).status == "quarantined"
    with audit.database(config).begin() as conn:  # a tampered log names no champion
        conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        conn.execute(sa.text("UPDATE audit_log SET entry = replace(entry, '\"2\"', '\"9\"')"))
    assert monitoring_page.model_overview(config).champion == "audit log fails verification"
