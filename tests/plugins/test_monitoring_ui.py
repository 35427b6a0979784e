"""The monitoring page and reports in a real Airflow api-server and a real headless Chromium, with and without login."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from datetime import date

import httpx
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.errors import PartitionQuarantinedError
from pipelines.flows import nightly
from pipelines.flows.nightly import validate_partition
from pipelines.storage.partitions import partition_dir
from tests.api_server import admin_password, free_port, wait_until_healthy
from tests.browser import COOKIE, chromium, login, screens_folder
from tests.conftest import REPO, airflow_env, airflow_home, score_night, write_config

pytestmark = pytest.mark.slow  # a real api-server (and make airflow-ui) per module: make test-fast leaves it out

# A data value that closes Evidently's <script> block and calls the Airflow REST API with the viewer's login.
ATTACK = (
    "document.title='PWNED';fetch('/api/v2/variables',{method:'POST',credentials:'include',"
    "headers:{'content-type':'application/json'},body:JSON.stringify({key:'KEY',value:'x'})})"
)
INJECTED_NIGHT, RAW_NIGHT = "2026-09-09", "2026-09-10"


@pytest.fixture(scope="module")
def server(champion_lake, tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("ui")
    shutil.copytree(champion_lake.data_root, folder / "data")
    config_path = write_config(folder)
    text = config_path.read_text().replace(str(folder / "mlflow"), str(champion_lake.mlflow.store_dir))
    config_path.write_text(text)
    config = load_config(config_path)
    for ds in ("2026-09-10", "2026-09-11"):
        validated, scored = score_night(config, ds, f"run-{ds}")
        nightly.monitor_night(config, validated, scored, f"run-{ds}")
    sample_data.break_partition(config.data_root, date(2026, 9, 12), "missing_column")
    with pytest.raises(PartitionQuarantinedError):
        validate_partition(config, "2026-09-12", "run-bad")
    _inject_script(config)
    port = free_port()
    scrape_token = secrets.token_urlsafe(24)
    env = airflow_env(airflow_home(airflow_db, folder / "airflow"), config_path) | {
        "AIRFLOW_CONN_MONITORING_METRICS": json.dumps({"conn_type": "generic", "password": scrape_token}),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    log = open(folder / "airflow.log", "w")
    # what `make airflow-ui` runs: api-server, scheduler, dag-processor and triggerer
    proc = subprocess.Popen(
        ["bash", str(REPO / "include" / "airflow_local.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, {"airflow": (proc, folder / "airflow.log")})
        password = admin_password(folder / "airflow")
        yield {
            "base": base,
            "password": password,
            "folder": folder,
            "config": config,
            "proc": proc,
            "scrape_token": scrape_token,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _inject_script(config) -> None:
    """One night whose category values carry the attack (0.5% of rows: within tolerance, so it is scored and
    reported), and one report written raw, as a report from any other tool would be, with the attack live in it."""
    folder = partition_dir(config.data_root, "incoming", INJECTED_NIGHT)
    night = pd.read_parquet(folder)
    night.loc[night.index[:10], "loan_purpose"] = f"</script><script>{ATTACK.replace('KEY', 'pwned_by_data')}</script>"
    for old in folder.iterdir():
        old.unlink()
    pq.write_table(pa.Table.from_pandas(night, preserve_index=False), folder / "part-0000.parquet")
    validated, scored = score_night(config, INJECTED_NIGHT, "run-injected")
    nightly.monitor_night(config, validated, scored, "run-injected")
    raw = f"<!doctype html><html><body><h1>raw report</h1><script>{ATTACK.replace('KEY', 'pwned_by_report')}</script></body></html>"
    (partition_dir(config.data_root, "reports", RAW_NIGHT) / "performance.html").write_text(raw)


@pytest.fixture
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def screens():
    return screens_folder()


def _token(server) -> str:
    response = httpx.post(f"{server['base']}/auth/token", json={"username": "admin", "password": server["password"]})
    return response.json()["access_token"]


def test_page_and_reports_refuse_anonymous_users(server):
    base = server["base"]
    assert httpx.get(f"{base}/monitoring/").status_code == 401
    for route in (
        "reports/ds=2026-09-11/drift.html",
        "reports/ds=2026-09-11/drift_overview.html",
        "reports/ds=2026-09-11/columns/0.html",
        "reports/ds=2026-09-11/drift.json",
        "models/v2_vs_v1/candidate.html",
    ):
        assert httpx.get(f"{base}/monitoring/{route}").status_code == 401, route
    browser_like = httpx.get(f"{base}/monitoring/", headers={"accept": "text/html"})
    assert browser_like.status_code == 303 and browser_like.headers["location"].startswith("/auth/login")
    forged = httpx.get(f"{base}/monitoring/", headers={"authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


def test_report_paths_cannot_escape_the_reports_folder(server):
    headers = {"authorization": f"Bearer {_token(server)}"}
    base = server["base"]
    assert httpx.get(f"{base}/monitoring/reports/ds=2026-09-11/drift.html", headers=headers).status_code == 200
    for path in (
        "ds=2026-09-11/..%2F..%2Fmonitoring%2Fhistory.db",
        "..%2Fincoming/part-0000.parquet",
        "ds=2026-09-11/validation.json",
        "ds=../drift.html",
        "ds=2026-09-30/drift.html",
    ):
        assert httpx.get(f"{base}/monitoring/reports/{path}", headers=headers).status_code == 404, path


def test_the_drift_overview_ranks_every_column_and_each_column_page_is_rendered_on_demand(server):
    headers = {"authorization": f"Bearer {_token(server)}"}
    base = f"{server['base']}/monitoring/reports/ds={INJECTED_NIGHT}"
    overview = httpx.get(f"{base}/drift_overview.html", headers=headers)
    assert overview.status_code == 200 and overview.headers["content-security-policy"].startswith("sandbox")
    features = server["config"].features.all
    assert all(f">{name}</a>" in overview.text for name in features)  # every column, linked to its page
    assert "<script" not in overview.text.lower()
    column = httpx.get(f"{base}/columns/0.html", headers=headers)
    assert column.status_code == 200 and "<svg" in column.text and "all columns of ds=" in column.text
    pages = [httpx.get(f"{base}/columns/{i}.html", headers=headers).text for i in range(len(features) + 1)]
    attacked = next(page for page in pages if "<h1>loan_purpose</h1>" in page)
    assert "<script" not in attacked.lower() and "&lt;/script&gt;" in attacked  # the data value shown as text
    assert httpx.get(f"{base}/columns/{len(features) + 5}.html", headers=headers).status_code == 404


def test_the_shared_chart_library_is_served_to_sandboxed_reports_without_login(server):
    from pipelines.steps.reports import evidently_lib_name

    base = server["base"]
    report = httpx.get(
        f"{base}/monitoring/reports/ds=2026-09-11/drift.html", headers={"authorization": f"Bearer {_token(server)}"}
    )
    name = evidently_lib_name()
    assert f'<script src="../_lib/{name}"></script>' in report.text and len(report.content) < 1_000_000
    assert f"script-src {base}/monitoring/reports/_lib/ " in report.headers["content-security-policy"]
    lib = httpx.get(f"{base}/monitoring/reports/_lib/{name}")  # no cookie: a sandboxed page sends none
    assert lib.status_code == 200 and lib.headers["content-type"].startswith("text/javascript")
    assert lib.headers["cross-origin-resource-policy"] == "cross-origin" and len(lib.content) > 1_000_000
    assert httpx.get(f"{base}/monitoring/reports/_lib/history.db").status_code == 404


def test_plugin_adds_a_nav_entry(server):
    plugins = httpx.get(
        f"{server['base']}/api/v2/plugins", headers={"authorization": f"Bearer {_token(server)}"}
    ).json()
    views = [v for p in plugins["plugins"] for v in p["external_views"]]
    assert {"name": "Model monitoring", "href": "/monitoring/"}.items() <= views[0].items()


def test_browser_login_page_and_report(server, browser, screens):
    base = server["base"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/monitoring/")
    assert "/auth/login" in page.url  # anonymous: sent to the Airflow login
    login(page, base, server["password"])
    assert any(c["name"] == COOKIE for c in page.context.cookies()), page.context.cookies()
    page.goto(f"{base}/monitoring/")
    assert page.title() == "Model monitoring"
    table = page.locator("table#nights").inner_text()
    assert "bootstrap" in page.locator("table#champions").inner_text()
    assert "2026-09-11" in table and "2026-09-10" in table and "quarantined" in table
    page.click("a[href$='ds=2026-09-11/drift.html']")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/monitoring/reports/ds=2026-09-11/drift.html")
    page.wait_for_selector("text=Drift in column", timeout=30_000)
    page.screenshot(path=str(screens / "evidently-drift.png"))
    assert (screens / "evidently-drift.png").stat().st_size > 20_000


def test_the_page_shows_the_state_first_with_interactive_charts_under_its_policy(server, browser, screens):
    base = server["base"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    refused = []
    page.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: refused.append(str(e)))
    login(page, base, server["password"])
    page.goto(f"{base}/monitoring/")
    # the state strip: champion and since when, approvals, episode, and the last night (the quarantined one)
    assert page.locator("#state-champion").inner_text().startswith("Champion v1")
    assert "bootstrap" in page.locator("#state-champion").inner_text()
    assert "Approvals pending: 0" in page.locator("#state-approvals").inner_text()
    night = page.locator("#state-night").inner_text()
    assert "Last night 2026-09-12" in night and "quarantined" in night
    # the charts are drawn by the shipped plotly.js under the page's policy (no inline script, no eval)
    page.wait_for_selector("#chart-drift .main-svg", timeout=30_000)
    page.wait_for_selector("#chart-heatmap .main-svg", timeout=30_000)
    assert page.locator("#chart-drift .shapelayer path").count() >= 1  # the drift-share threshold line
    page.screenshot(path=str(screens / "monitoring-page.png"), full_page=True)
    # hover a night: its drift share and drifted columns show
    point = page.locator("#chart-drift .scatterlayer .trace:first-child .point").first.bounding_box()
    page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)  # plotly's drag layer is on top
    page.wait_for_selector("#chart-drift .hoverlayer .hovertext", timeout=10_000)
    hover = page.locator("#chart-drift .hoverlayer").text_content()
    assert "drift share" in hover and "drifted" in hover, hover
    page.screenshot(path=str(screens / "monitoring-hover.png"))
    assert not [m for m in refused if "Content Security Policy" in m or "Refused" in m], refused
    # filtering and sorting the nights
    page.fill("#night-filter", "2026-09-12")
    visible = [r for r in page.locator("#nights tbody tr").all() if r.is_visible()]
    assert len(visible) == 1 and "quarantine record" in visible[0].inner_text()
    page.fill("#night-filter", "")
    page.select_option("#night-status", "quarantined")
    assert sum(r.is_visible() for r in page.locator("#nights tbody tr").all()) == 1
    page.select_option("#night-status", "")
    page.click("#nights th:has-text('night')")  # ascending after the first click's descending
    page.click("#nights th:has-text('night')")
    assert page.locator("#nights tbody tr").first.inner_text().startswith("2026-09-09")
    # the quarantine record is linked and served as data
    record = page.locator("a:has-text('quarantine record')").first.get_attribute("href")
    answer = page.request.get(f"{base}{record}")
    assert answer.ok and "missing" in answer.json()["reason"] and answer.headers["content-type"] == "application/json"
    # a heat-map cell opens that night's drift overview
    data = json.loads(page.locator("#chart-data").text_content())
    nights, columns = len(data["heat"]["nights"]), len(data["heat"]["columns"])
    page.locator("#chart-heatmap").scroll_into_view_if_needed()
    box = page.locator("#chart-heatmap .nsewdrag").first.bounding_box()
    x = box["x"] + box["width"] * (1 - 0.5 / nights)  # the newest night
    y = box["y"] + box["height"] * 0.5 / columns  # the top column
    page.mouse.move(x, y)
    page.wait_for_selector("#chart-heatmap .hoverlayer .hovertext", timeout=10_000)
    page.mouse.click(x, y)
    page.wait_for_url("**/drift_overview.html", timeout=15_000)
    assert "/monitoring/reports/ds=2026-09-11/drift_overview.html" in page.url
    page.screenshot(path=str(screens / "drift-overview.png"), full_page=True)


def test_every_listener_is_on_loopback(server):
    """`make airflow-ui` starts no log server on all interfaces (standalone's scheduler and triggerer do).

    Sampled for 20 s once the scheduler and the triggerer run, since their log servers would start after them.
    """
    root = psutil.Process(server["proc"].pid)
    deadline, both_since = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        procs = [root, *root.children(recursive=True)]
        names = " ".join(" ".join(_cmdline(p)) for p in procs)
        listening = [(p.pid, c.laddr) for p in procs for c in _connections(p) if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip in ("127.0.0.1", "::1") for _, addr in listening), (listening, names)
        if "scheduler" in names and "triggerer" in names:
            both_since = both_since or time.monotonic()
            if time.monotonic() - both_since > 20:
                return
        time.sleep(2)
    raise AssertionError(f"the scheduler and the triggerer did not both run: {names}")


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _connections(proc):
    try:
        return proc.net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def test_reports_are_served_sandboxed(server):
    headers = {"authorization": f"Bearer {_token(server)}"}
    base = server["base"]
    html = httpx.get(f"{base}/monitoring/reports/ds={INJECTED_NIGHT}/drift.html", headers=headers)
    policy = html.headers["content-security-policy"]
    assert (
        policy.startswith("sandbox allow-scripts;")
        and "connect-src 'none'" in policy
        and "allow-same-origin" not in policy
    )
    assert "</script><script>document.title" not in html.text and "\\u003c/script\\u003e" in html.text
    data = httpx.get(f"{base}/monitoring/reports/ds={INJECTED_NIGHT}/drift.json", headers=headers)
    assert data.headers["content-type"] == "application/json" and data.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(f"{base}/monitoring/", headers=headers)
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_script_in_the_data_cannot_act_with_the_viewers_login(server, browser, screens):
    base = server["base"]
    headers = {"authorization": f"Bearer {_token(server)}"}
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, base, server["password"])
    page.goto(f"{base}/")
    # the control: this very request, made from an Airflow UI page, does act with the login
    control = ATTACK.replace("KEY", "control").removeprefix("document.title='PWNED';")
    status = page.evaluate(f"async () => (await {control}).status")
    assert status in (200, 201), status
    page.goto(f"{base}/monitoring/reports/ds={INJECTED_NIGHT}/drift.html")
    page.wait_for_selector("text=Drift in column", timeout=30_000)  # Evidently's charts still render
    page.wait_for_timeout(1500)
    assert page.title() != "PWNED"  # the value is shown as text, never run
    page.screenshot(path=str(screens / "injected-drift.png"))
    page.goto(f"{base}/monitoring/reports/ds={RAW_NIGHT}/performance.html")
    page.wait_for_function("document.title === 'PWNED'", timeout=15_000)  # the raw report's script does run ...
    page.wait_for_timeout(1500)
    variables = {v["key"] for v in httpx.get(f"{base}/api/v2/variables", headers=headers).json()["variables"]}
    assert "control" in variables
    assert not variables & {"pwned_by_data", "pwned_by_report"}  # ... but it cannot act: no cookie, no network


def test_prometheus_scrapes_the_metrics_with_its_token_or_a_login_and_nothing_else(server):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    url = f"{server['base']}/monitoring/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer not-the-token"}).status_code == 401
    scraped = httpx.get(url, headers={"authorization": f"Bearer {server['scrape_token']}"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("application/openmetrics-text")
    samples = {
        (s.name, s.labels.get("status")): s.value
        for f in text_string_to_metric_families(scraped.text)
        for s in f.samples
    }
    assert samples[("nightly_ml_partitions", "quarantined")] == 1  # the broken night of the fixture
    assert samples[("nightly_ml_audit_chain_ok", None)] == 1 and samples[("nightly_ml_rows_scored", None)] > 0
    with_login = httpx.get(url, headers={"authorization": f"Bearer {_token(server)}"})
    assert with_login.status_code == 200 and "nightly_ml_drift_share" in with_login.text
    # the scrape token opens the metrics only, never the page or a report
    token = {"authorization": f"Bearer {server['scrape_token']}"}
    assert httpx.get(f"{server['base']}/monitoring/", headers=token).status_code == 401
