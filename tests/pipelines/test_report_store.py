"""Reports and quarantine records on an S3-compatible store (moto's server on loopback): published whole through a
manifest, read back by the monitoring page, refused when altered, and a clear error when the store is away."""

import hashlib
import json
import logging
import shutil
from datetime import date

import pytest

from harness import sample_data
from harness.topology import free_port
from pipelines.core.config import load_config
from pipelines.core.contracts import NightRecord
from pipelines.core.errors import ConfigError, PartitionQuarantinedError, ReportStoreError
from pipelines.core.paths import QUARANTINE, QUARANTINE_RECORD
from pipelines.storage import report_store
from pipelines.storage.partitions import partition_dir
from pipelines.surfaces.monitoring_page import read_report
from tests.conftest import fresh_bucket, write_config


@pytest.fixture
def store(object_store, tmp_path, monkeypatch, request):
    """A config whose reports go to a fresh bucket of the store; the keys only in the environment."""
    bucket = f"reports-{abs(hash(request.node.name)) % 10**9}"
    client = fresh_bucket(object_store, monkeypatch, bucket)
    monkeypatch.setenv("PIPELINE_REPORT_STORE", f"s3://{bucket}/team-a/nightly")
    config = load_config(write_config(tmp_path))
    return config, client, bucket


def _night(config, ds, **files):
    folder = partition_dir(config.data_root, "reports", ds)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _keys(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_a_published_night_is_served_from_the_store_without_the_local_files(store):
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "<p>drift</p>", "summary.json": "{}"})
    (folder / ".drift.html.tmp-123").write_text("half")  # an interrupted writer's leftover is never published
    key = report_store.publish(config, folder)
    assert key == "team-a/nightly/reports/ds=2026-09-01/manifest.json"
    shutil.rmtree(folder)  # the api-server has no copy: what it serves comes from the bucket
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"<p>drift</p>"
    assert read_report(config, "ds=2026-09-01", "summary.json") == b"{}"
    assert read_report(config, "ds=2026-09-01", "performance.html") is None  # a known name this night lacks
    assert read_report(config, "ds=2026-09-01", "manifest.json") is None  # not a report name
    assert read_report(config, "ds=2026-09-02", "drift.html") is None
    for partition in ("ds=../../x", "ds=2026-09-01/../ds=2026-09-01", "..", "ds=2026-09-01%2f.."):
        assert read_report(config, partition, "drift.html") is None
    manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert sorted(manifest["files"]) == ["drift.html", "summary.json"]
    assert all(k.startswith("team-a/nightly/reports/ds=2026-09-01/") for k in _keys(client, bucket))


def test_a_rerun_replaces_the_night_and_leaves_one_version(store):
    config, client, bucket = store
    for text in ("first run", "second run"):
        folder = _night(config, "2026-09-01", **{"drift.html": text})
        report_store.publish(config, folder)
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"second run"
    keys = _keys(client, bucket)
    assert len(keys) == 2 and keys[-1].endswith("/manifest.json")  # one version's file and the manifest


def test_a_publish_that_stops_half_way_leaves_the_previous_night_whole(store, monkeypatch):
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "old drift", "summary.json": '{"old": 1}'})
    report_store.publish(config, folder)
    real = report_store._client

    def failing_after_first_file():
        from botocore.exceptions import EndpointConnectionError

        client, puts = real(), []
        put = client.put_object

        def put_object(**kwargs):
            puts.append(kwargs["Key"])
            if len(puts) > 1:
                raise EndpointConnectionError(endpoint_url="http://store")
            return put(**kwargs)

        client.put_object = put_object
        return client

    monkeypatch.setattr(report_store, "_client", failing_after_first_file)
    folder = _night(config, "2026-09-01", **{"drift.html": "new drift", "summary.json": '{"new": 1}'})
    with pytest.raises(ReportStoreError, match=r"could not publish reports/ds=2026-09-01 to s3://.*rerun the task"):
        report_store.publish(config, folder)
    monkeypatch.setattr(report_store, "_client", real)
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"old drift"  # never one new file with an old one
    assert read_report(config, "ds=2026-09-01", "summary.json") == b'{"old": 1}'
    report_store.publish(config, folder)  # the rerun
    assert read_report(config, "ds=2026-09-01", "summary.json") == b'{"new": 1}'
    assert len(_keys(client, bucket)) == 3  # the half-published file went with the older versions


def test_a_file_altered_in_the_bucket_is_refused(store, caplog):
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "<p>real</p>"})
    report_store.publish(config, folder)
    (key,) = [k for k in _keys(client, bucket) if k.endswith("drift.html")]
    client.put_object(Bucket=bucket, Key=key, Body=b"<script>alert(1)</script>")
    with caplog.at_level(logging.ERROR, logger="pipelines.storage.report_store"):
        assert read_report(config, "ds=2026-09-01", "drift.html") is None
    assert any("SHA-256 differs" in r.getMessage() for r in caplog.records)


def test_an_unreachable_store_is_a_clear_error(store, monkeypatch):
    config, _, _ = store
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    folder = _night(config, "2026-09-01", **{"drift.html": "x"})
    with pytest.raises(ReportStoreError, match="could not publish .* Check that the object store is up"):
        report_store.publish(config, folder)
    with pytest.raises(ReportStoreError, match="could not read reports/ds=2026-09-01/drift.html"):
        read_report(config, "ds=2026-09-01", "drift.html")


def test_without_a_store_nothing_is_published_and_the_page_reads_the_data_root(config):
    folder = _night(config, "2026-09-01", **{"drift.html": "local"})
    assert report_store.publish(config, folder) is None
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"local"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://key:secret@bucket/prefix", "holds a credential"),
        ("https://bucket/prefix", "expected s3://bucket/prefix"),
        ("s3://Bad_Bucket/prefix", "valid bucket name"),
        ("s3://bucket/../other", "the prefix may hold"),
        ("s3://bucket/prefix?x-amz-security-token=t", "valid bucket name"),
    ],
)
def test_a_store_url_is_checked_from_the_yaml_and_the_environment(tmp_path, url, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(write_config(tmp_path, monitoring={"report_store": url}))
    with pytest.raises(ConfigError, match=problem):
        load_config(write_config(tmp_path), environ={"PIPELINE_REPORT_STORE": url})
    good = load_config(write_config(tmp_path), environ={"PIPELINE_REPORT_STORE": "s3://bucket/a/b"})
    assert report_store.location(good) == report_store.StoreLocation("bucket", "a/b")


def test_a_quarantine_record_is_published_and_withdrawn_when_the_night_passes(store):
    import pandas as pd

    from pipelines.steps.profile import data_profile
    from pipelines.steps.validation import validate_against_profile
    from pipelines.storage.schema import incoming_partition, read_table

    config, client, bucket = store
    days = sample_data.generate(config.data_root, date(2026, 9, 1), 3, 800, label_delay_days=0)
    frame = pd.concat(read_table(incoming_partition(config, d.isoformat())).to_pandas() for d in days)
    profile = data_profile(frame, config)
    backup = config.data_root / "backup.parquet"
    (original,) = partition_dir(config.data_root, "incoming", "2026-09-02").glob("*.parquet")
    shutil.copy(original, backup)
    sample_data.break_partition(config.data_root, date(2026, 9, 2), "missing_column")
    with pytest.raises(PartitionQuarantinedError):
        validate_against_profile(config, "2026-09-02", profile)
    record = report_store.fetch(config, f"{QUARANTINE}/ds=2026-09-02", QUARANTINE_RECORD)
    local = (partition_dir(config.data_root, QUARANTINE, "2026-09-02") / QUARANTINE_RECORD).read_bytes()
    assert record == local and json.loads(record)["ds"] == "2026-09-02"
    shutil.copy(backup, original)  # the upstream fixed the file: the rerun passes and the record goes
    validate_against_profile(config, "2026-09-02", profile)
    assert report_store.fetch(config, f"{QUARANTINE}/ds=2026-09-02", QUARANTINE_RECORD) is None
    assert not [k for k in _keys(client, bucket) if "/quarantine/" in k]


def test_a_reader_that_followed_a_replaced_manifest_reads_the_new_one(store, monkeypatch):
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "first"})
    report_store.publish(config, folder)
    stale = report_store._manifest(
        config, report_store._client(), report_store.location(config), "reports/ds=2026-09-01"
    )
    folder = _night(config, "2026-09-01", **{"drift.html": "second"})
    report_store.publish(config, folder)  # deletes the first version
    real, calls = report_store._manifest, []
    monkeypatch.setattr(
        report_store, "_manifest", lambda *a: calls.append(a) and None or (stale if len(calls) == 1 else real(*a))
    )
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"second" and len(calls) == 2


def test_a_gate_comparison_is_served_from_the_store_by_its_pair_only(store):
    from pipelines.surfaces.monitoring_page import read_model_report

    config, _, _ = store
    folder = config.data_root / "reports" / "models" / "v2_vs_v1"
    folder.mkdir(parents=True)
    (folder / "comparison.json").write_text('{"passed": true}')
    report_store.publish(config, folder)
    shutil.rmtree(folder)
    assert read_model_report(config, "v2_vs_v1", "comparison.json") == b'{"passed": true}'
    assert read_model_report(config, "v2_vs_v1", "candidate.html") is None
    for pair in ("v2_vs_v1/..", "../v2_vs_v1", "v2-vs-v1"):
        assert read_model_report(config, pair, "comparison.json") is None
    with pytest.raises(ValueError, match="not a report folder"):
        report_store.fetch(config, "reports/../../secrets", "comparison.json")


def test_a_step_that_adds_reports_keeps_the_ones_another_machine_published(store):
    """The realised-performance report is built on whichever worker evaluates the labels: it joins the night's
    reports in the store, and this machine's stale copy of the others is not published over the newer ones."""
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "from worker 1", "summary.json": "{}"})
    report_store.publish(config, folder)
    shutil.rmtree(folder)
    folder = _night(config, "2026-09-01", **{"drift.html": "stale copy on worker 2", "performance.html": "perf"})
    report_store.publish(config, folder, names=["performance.html"])
    assert read_report(config, "ds=2026-09-01", "performance.html") == b"perf"
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"from worker 1"
    assert read_report(config, "ds=2026-09-01", "summary.json") == b"{}"
    versions = {k.split("/")[4] for k in _keys(client, bucket) if not k.endswith("manifest.json")}
    assert len(versions) == 2  # the kept files' version stays while the manifest names it
    folder = _night(config, "2026-09-01", **{"drift.html": "rerun of the night"})
    (folder / "performance.html").unlink()
    report_store.publish(config, folder)  # a whole night published again replaces everything
    assert read_report(config, "ds=2026-09-01", "performance.html") is None
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"rerun of the night"
    assert len({k.split("/")[4] for k in _keys(client, bucket) if not k.endswith("manifest.json")}) == 1


def _manifest_key(config, folder):
    return report_store.location(config).key(folder, report_store.MANIFEST)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "is not a manifest \\(not JSON"),
        (b'{"version": "v", "files": []}', "is not a manifest \\(no map of file names"),
        (b"[1, 2]", "is not a manifest \\(no map of file names"),
        (b"null", "is not a manifest \\(no map of file names"),
    ],
)
def test_a_malformed_manifest_is_a_clear_error(store, body, problem):
    config, client, bucket = store
    report_store.publish(config, _night(config, "2026-09-01", **{"drift.html": "<p>real</p>"}))
    client.put_object(Bucket=bucket, Key=_manifest_key(config, "reports/ds=2026-09-01"), Body=body)
    with pytest.raises(ReportStoreError, match=problem):
        read_report(config, "ds=2026-09-01", "drift.html")


def test_a_manifest_written_without_the_key_is_refused(store):
    config, client, bucket = store
    folder = _night(config, "2026-09-01", **{"drift.html": "<p>real</p>"})
    report_store.publish(config, folder)
    evil = b"<script>steal()</script>"
    client.put_object(Bucket=bucket, Key="team-a/nightly/reports/ds=2026-09-01/evil/drift.html", Body=evil)
    forged = {"version": "evil", "files": {"drift.html": {"sha256": hashlib.sha256(evil).hexdigest(), "bytes": 24}}}
    for manifest in (forged, forged | {"signature": "0" * 64}):
        client.put_object(
            Bucket=bucket, Key=_manifest_key(config, "reports/ds=2026-09-01"), Body=json.dumps(manifest).encode()
        )
        with pytest.raises(ReportStoreError, match="is not signed with this deployment's audit key"):
            read_report(config, "ds=2026-09-01", "drift.html")
    other = config.model_copy(update={"audit_key": "another-deployment"})
    report_store.publish(config, folder)
    with pytest.raises(ReportStoreError, match="is not signed with this deployment's audit key"):
        read_report(other, "ds=2026-09-01", "drift.html")
    assert read_report(config, "ds=2026-09-01", "drift.html") == b"<p>real</p>"


def test_quarantine_records_forged_or_withdrawn_in_the_bucket_do_not_move_training(store):
    from pipelines.steps.training import training_partitions
    from pipelines.storage import history

    config, client, bucket = store
    sample_data.generate(config.data_root, date(2026, 9, 1), 4, 300, label_delay_days=0)
    all_days = training_partitions(config)
    assert [d.isoformat() for d in all_days] == ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"]
    # a quarantine the pipeline recorded (in the history and the store), then withdrawn by a bucket writer
    history.record_night(
        config,
        NightRecord(
            ds="2026-09-02",
            model_name=config.model.registered_name,
            model_version="1",
            rows=10,
            validation_success=False,
        ),
    )
    # a quarantine record the pipeline never wrote
    forged = {"version": "v", "files": {"validation.json": {"sha256": "0" * 64}}}
    client.put_object(Bucket=bucket, Key=_manifest_key(config, "quarantine/ds=2026-09-03"), Body=json.dumps(forged))
    days = [d.isoformat() for d in training_partitions(config)]
    assert days == ["2026-09-01", "2026-09-03", "2026-09-04"]


@pytest.fixture
def plugin_client(store, monkeypatch):
    """The monitoring plugin's own app, logged in, on the store's config (what the api-server mounts)."""
    import importlib.util

    from fastapi.testclient import TestClient

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "model_monitoring_under_test", REPO / "plugins" / "model_monitoring.py"
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    config = store[0]
    monkeypatch.setattr(plugin, "_config", lambda: config)
    plugin.app.dependency_overrides[plugin.require_airflow_login] = lambda: "alice"
    return TestClient(plugin.app), store


def test_the_plugin_answers_store_problems_with_a_status_and_a_reason(plugin_client, monkeypatch):
    client, (config, s3, bucket) = plugin_client
    report_store.publish(config, _night(config, "2026-09-01", **{"drift.html": "<p>real</p>"}))
    assert client.get("/reports/ds=2026-09-01/drift.html").status_code == 200
    s3.put_object(Bucket=bucket, Key=_manifest_key(config, "reports/ds=2026-09-01"), Body=b'{"files": []}')
    broken = client.get("/reports/ds=2026-09-01/drift.html")
    assert broken.status_code == 502 and "is not a manifest" in broken.text
    assert broken.headers["content-type"].startswith("text/plain")
    assert client.get("/reports/ds=2026-09-02/drift.html").status_code == 404
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    away = client.get("/reports/ds=2026-09-01/drift.html")
    assert away.status_code == 502 and "Check that the object store is up" in away.text


def test_old_nights_html_expires_here_and_in_the_store_and_the_summaries_stay(store):
    from pipelines.flows.nightly import expire_reports
    from pipelines.storage import history
    from pipelines.surfaces.monitoring_page import render_page

    config, client, bucket = store
    config = config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"keep_reports_partitions": 2})}
    )
    days = [f"2026-09-0{d}" for d in range(1, 6)]
    for ds in days:
        folder = _night(
            config, ds, **{"drift_overview.html": "<p>o</p>", "drift.html": "<p>d</p>", "summary.json": "{}"}
        )
        report_store.publish(config, folder)
        reports = {
            "drift_overview_html": str(folder / "drift_overview.html"),
            "summary_json": str(folder / "summary.json"),
        }
        history.record_night(
            config,
            NightRecord(
                ds=ds,
                model_name=config.model.registered_name,
                model_version="1",
                validation_success=True,
                reports=reports,
            ),
        )
    assert expire_reports(config, days[-1]) == days[:2]  # older than 2 partitions before 09-05
    assert expire_reports(config, days[-1]) == []  # once only
    for ds in days[:2]:
        folder = partition_dir(config.data_root, "reports", ds)
        assert not list(folder.glob("*.html")) and (folder / "summary.json").is_file()
        assert read_report(config, f"ds={ds}", "drift.html") is None  # gone from the store too
        assert read_report(config, f"ds={ds}", "summary.json") == b"{}"
        assert not [k for k in _keys(client, bucket) if f"ds={ds}/" in k and k.endswith(".html")]
    assert read_report(config, f"ds={days[2]}", "drift.html") == b"<p>d</p>"  # within the window: kept
    frame = history.read_history(config).set_index("ds")
    assert frame.loc[days[0], "reports"] == {
        "summary_json": str(partition_dir(config.data_root, "reports", days[0]) / "summary.json"),
        "expired_at": days[-1],
    }
    page = render_page(config, "/monitoring")
    assert page.count(">expired</span>") == 2
