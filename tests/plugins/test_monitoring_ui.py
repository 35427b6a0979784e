"""The monitoring page and reports in a real Airflow api-server and a real headless Chromium, with and without login."""

import os
import shutil
import signal
import subprocess
import sys
from datetime import date

import httpx
import pytest

from pipelines import monitoring, sample_data, scoring
from pipelines.config import load_config
from pipelines.errors import PartitionQuarantinedError
from pipelines.validation import validate_against_champion
from tests.api_server import admin_password, free_port, wait_until_healthy
from tests.conftest import airflow_env, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def server(champion_lake, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui")
    shutil.copytree(champion_lake.data_root, folder / "data")
    config_path = write_config(folder)
    text = config_path.read_text().replace(str(folder / "mlflow"), str(champion_lake.mlflow.store_dir))
    config_path.write_text(text)
    config = load_config(config_path)
    for ds in ("2026-09-10", "2026-09-11"):
        scored = scoring.score_partition(config, ds, f"run-{ds}").as_dict()
        monitoring.monitor_night(config, ds, scored, f"run-{ds}")
    sample_data.break_partition(config.data_root, date(2026, 9, 12), "missing_column")
    with pytest.raises(PartitionQuarantinedError):
        validate_against_champion(config, "2026-09-12", "run-bad")
    port = free_port()
    env = airflow_env(folder / "airflow", config_path) | {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    assert subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True).returncode == 0
    log = open(folder / "api-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, {"api-server": (proc, folder / "api-server.log")})
        password = admin_password(folder / "airflow")
        yield {"base": base, "password": password, "folder": folder, "config": config}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _token(server) -> str:
    response = httpx.post(f"{server['base']}/auth/token", json={"username": "admin", "password": server["password"]})
    return response.json()["access_token"]


def test_page_and_reports_refuse_anonymous_users(server):
    base = server["base"]
    assert httpx.get(f"{base}/monitoring/").status_code == 401
    assert httpx.get(f"{base}/monitoring/reports/ds=2026-09-11/drift.html").status_code == 401
    browser_like = httpx.get(f"{base}/monitoring/", headers={"accept": "text/html"})
    assert browser_like.status_code == 303 and browser_like.headers["location"].startswith("/auth/login")
    forged = httpx.get(f"{base}/monitoring/", headers={"authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


def test_report_paths_cannot_escape_the_reports_folder(server):
    headers = {"authorization": f"Bearer {_token(server)}"}
    base = server["base"]
    assert httpx.get(f"{base}/monitoring/reports/ds=2026-09-11/drift.html", headers=headers).status_code == 200
    for path in ("ds=2026-09-11/..%2F..%2Fmonitoring%2Fhistory.db", "..%2Fincoming/part-0000.parquet",
                 "ds=2026-09-11/validation.json", "ds=../drift.html", "ds=2026-09-30/drift.html"):
        assert httpx.get(f"{base}/monitoring/reports/{path}", headers=headers).status_code == 404, path


def test_plugin_adds_a_nav_entry(server):
    plugins = httpx.get(f"{server['base']}/api/v2/plugins", headers={"authorization": f"Bearer {_token(server)}"}).json()
    views = [v for p in plugins["plugins"] for v in p["external_views"]]
    assert {"name": "Model monitoring", "href": "/monitoring/"}.items() <= views[0].items()


def test_browser_login_page_and_report(server, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    base = server["base"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/monitoring/")
        assert "/auth/login" in page.url  # anonymous: sent to the Airflow login
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", server["password"])
        page.click("button:has-text('Sign in')")
        # the login page sets the JWT cookie and then navigates by script: wait for both before leaving it,
        # or our navigation and the login page's race (ERR_ABORTED, or a second trip to the login page)
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
        page.wait_for_load_state("networkidle")
        assert any(c["name"] == COOKIE for c in page.context.cookies()), page.context.cookies()
        page.goto(f"{base}/monitoring/")
        assert page.title() == "Model monitoring"
        table = page.locator("table#nights").inner_text()
        assert "bootstrap" in page.locator("table#champions").inner_text()
        assert "2026-09-11" in table and "2026-09-10" in table and "quarantined" in table
        assert page.locator("img[alt^='drift share']").count() == 1
        page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
        page.click("a[href$='ds=2026-09-11/drift.html']")
        page.wait_for_load_state("networkidle")
        assert page.url.endswith("/monitoring/reports/ds=2026-09-11/drift.html")
        page.wait_for_selector("text=Drift in column", timeout=30_000)
        page.screenshot(path=str(tmp_path / "drift.png"))
        browser.close()
    assert (tmp_path / "monitoring.png").stat().st_size > 20_000
    assert (tmp_path / "drift.png").stat().st_size > 20_000
