"""Approval required: retrain_model waits at Airflow's human-in-the-loop step until a person answers.

A real api-server shares the metadata DB with the runs. Approve (REST PATCH of hitlDetails) promotes; Reject does
not; no answer before the deadline is resolved by the scheduler's own timeout sweep
(SchedulerJobRunner.check_awaiting_input_timeouts, what a running scheduler calls on its timer) with the default
answer, Reject. The gate's min_gain is -1 here so that candidates from the same stable data pass it and reach the
approval step.
"""

import json
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.governance import registry
from pipelines.governance.audit import read_audit
from pipelines.governance.registry import Registry
from pipelines.surfaces.monitoring_page import resolve_model_report
from tests.alert_receivers import AlertReceivers
from tests.api_server import admin_headers, admin_password, free_port, wait_until_healthy
from tests.browser import chromium, have_chromium, login, screens_folder
from tests.conftest import REPO, airflow_env, airflow_home, write_config

pytestmark = pytest.mark.e2e

TIMEOUT_HOURS = 0.005  # 18 s
SWEEP = (
    "from airflow.jobs.job import Job\n"
    "from airflow.jobs.scheduler_job_runner import SchedulerJobRunner\n"
    "SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()\n"
)


def _pending(base, headers):
    response = httpx.get(f"{base}/api/v2/dags/retrain_model/dagRuns/~/hitlDetails", headers=headers, timeout=10)
    response.raise_for_status()
    return [d for d in response.json()["hitl_details"] if not d["response_received"]]


@pytest.fixture(scope="module")
def approvals(tmp_path_factory, airflow_db):
    folder = tmp_path_factory.mktemp("approval")
    with AlertReceivers() as receivers:
        port = free_port()
        config_path = write_config(
            folder,
            promotion={"require_approval": True, "approval_timeout_hours": TIMEOUT_HOURS, "min_gain": -1.0},
            # the links in the form and the alerts point at this api-server, so the browser can follow them
            alerts=AlertReceivers.config | {"base_url": f"http://127.0.0.1:{port}"},
        )
        config = load_config(config_path)
        sample_data.generate(config.data_root, date(2026, 9, 1), 14, 2000, label_delay_days=3)
        registry.init_store(config)
        env = (
            airflow_env(airflow_home(airflow_db, folder / "airflow"), config_path)
            | receivers.env
            | {
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
            }
        )
        run = lambda args, **kw: subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO, **kw)  # noqa: E731
        api_log = folder / "api-server.log"
        api = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
            env=env,
            stdout=api_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        driver_log = folder / "driver.log"
        driver = None
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(base, {"api-server": (api, api_log)})
            headers = admin_headers(base, folder / "airflow")
            driver = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).parent / "drive_approval.py"),
                    str(folder),
                    "approve",
                    "reject",
                    "timeout",
                ],
                env=env,
                stdout=driver_log.open("w"),
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            answers, seen = {}, {}
            deadline = time.monotonic() + 1200
            while driver.poll() is None and time.monotonic() < deadline:
                for detail in _pending(base, headers):
                    run_id = detail["task_instance"]["dag_run_id"]
                    if run_id in answers:
                        continue
                    step = ("approve", "reject", "timeout")[len(answers)]
                    seen[step] = {
                        "detail": detail,
                        "champion_while_waiting": Registry.open(config).champion().version,
                        "state_while_waiting": httpx.get(
                            f"{base}/api/v2/dags/retrain_model/dagRuns/{run_id}/taskInstances/approve_promotion",
                            headers=headers,
                        ).json()["state"],
                    }
                    if step == "approve" and have_chromium():
                        seen[step]["browser"] = _the_form_in_the_browser(base, folder / "airflow", run_id)
                    if step == "timeout":
                        time.sleep(TIMEOUT_HOURS * 3600 + 2)
                        early = detail["task_instance"]["state"]
                        sweep = run([sys.executable, "-c", SWEEP], timeout=300)
                        assert sweep.returncode == 0, sweep.stderr[-3000:]
                        seen[step]["state_before_sweep"] = early
                        answers[run_id] = "timeout"
                        continue
                    choice = "Approve" if step == "approve" else "Reject"
                    patch = httpx.patch(
                        f"{base}/api/v2/dags/retrain_model/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails",
                        headers=headers,
                        json={"chosen_options": [choice], "params_input": {}},
                        timeout=30,
                    )
                    seen[step]["patch"] = {"status": patch.status_code, "body": patch.json()}
                    answers[run_id] = step
                time.sleep(1)
            assert driver.wait(timeout=60) == 0, driver_log.read_text()[-5000:]
            outcomes = json.loads((folder / "outcomes.json").read_text())
            yield {
                "config": config,
                "outcomes": outcomes,
                "seen": seen,
                "answers": answers,
                "mail": list(receivers.mail),
                "posts": list(receivers.posts),
                "base": base,
                "headers": headers,
            }
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
            api.send_signal(signal.SIGINT)
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()


def _the_form_in_the_browser(base: str, home: Path, run_id: str) -> dict[str, str]:
    """Open the waiting run's approval form in Airflow's UI as a person would, follow its gate-page link; return
    what each screen showed (the screenshots are kept as test artefacts)."""
    screens = screens_folder()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        form = f"/dags/retrain_model/runs/{run_id}/tasks/approve_promotion/required_actions"
        login(page, base, admin_password(home), landing=form)
        page.goto(f"{base}{form}")
        link = page.locator("a:has-text('Open the side-by-side gate page')")
        link.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        form_text = page.locator("body").inner_text()
        page.screenshot(path=str(screens / "approval-form.png"), full_page=True)
        href = link.get_attribute("href") or ""
        if link.get_attribute("target") == "_blank":
            with page.context.expect_page() as opened:
                link.click()
            gate = opened.value
        else:
            link.click()
            gate = page
        gate.wait_for_load_state("networkidle")
        gate.wait_for_selector("#answer", timeout=30_000)
        gate.screenshot(path=str(screens / "gate-page.png"), full_page=True)
        return {"form": form_text, "href": href, "gate_url": gate.url, "gate": gate.locator("body").inner_text()}


def test_a_person_opens_the_gate_page_from_the_approval_form_in_the_ui(approvals):
    """The browser half of the approval: Airflow's own required-action form shows the comparison, the deadline
    and the two answers, and its link opens the side-by-side gate page (behind the same login)."""
    if "browser" not in approvals["seen"]["approve"]:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    seen = approvals["seen"]["approve"]["browser"]
    candidate = approvals["outcomes"]["approve"]["returns"]["train_candidate"]["version"]
    boot = approvals["outcomes"]["bootstrap"]["returns"]["train_candidate"]["version"]
    assert "Answer by about" in seen["form"] and "roc_auc (higher is better)" in seen["form"]
    assert "Approve" in seen["form"] and "Reject" in seen["form"]
    assert seen["href"].startswith(approvals["base"] + "/monitoring/") and seen["href"].endswith("/gate.html")
    assert seen["gate_url"] == seen["href"]  # the login carried over: not sent to the login page
    assert f"Gate: candidate v{candidate} against champion v{boot}" in seen["gate"]
    assert "Decision: waiting for the approval step" in seen["gate"] and "paired bootstrap interval" in seen["gate"]
    assert (screens_folder() / "gate-page.png").stat().st_size > 20_000


def test_the_run_waits_for_a_person_with_the_gate_comparison_on_screen(approvals):
    boot = approvals["outcomes"]["bootstrap"]["returns"]["train_candidate"]["version"]
    for step in ("approve", "reject", "timeout"):
        seen = approvals["seen"][step]
        assert seen["state_while_waiting"] == "awaiting_input"
        assert seen["champion_while_waiting"] == (
            boot if step == "approve" else approvals["outcomes"]["approve"]["returns"]["train_candidate"]["version"]
        )
        detail = seen["detail"]
        assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
        assert "95% paired bootstrap interval" in detail["body"] and "| roc_auc (higher is better) |" in detail["body"]
        # the form links the side-by-side gate page (never a server path) and says when no answer becomes Reject
        assert (
            "gate.html)" in detail["body"] and "Answer by about" in detail["body"] and "Trained on:" in detail["body"]
        )


def test_approval_through_the_rest_api_promotes(approvals):
    config, outcomes = approvals["config"], approvals["outcomes"]
    approved = outcomes["approve"]
    assert approvals["seen"]["approve"]["patch"]["status"] == 200
    assert approved["state"] == "success"
    assert approved["task_states"]["promote_candidate"] == "success"
    promoted = [e for e in read_audit(config) if e.action == "promote"]
    assert len(promoted) == 1
    assert promoted[0].to_version == approved["returns"]["train_candidate"]["version"]
    assert promoted[0].approved_by == "admin" and promoted[0].airflow_run_id == approved["run_id"]
    assert promoted[0].gate.comparison.samples > 0
    page = resolve_model_report(config, promoted[0].gate.pair, "gate.html").read_text()
    assert "<b>Decision:</b> approved by admin; v" in page  # the gate page says which answer was given


def test_rejection_and_timeout_do_not_promote(approvals):
    config, outcomes = approvals["config"], approvals["outcomes"]
    champion = outcomes["approve"]["returns"]["train_candidate"]["version"]
    assert Registry.open(config).champion().version == champion
    rejections = {e.airflow_run_id: e for e in read_audit(config) if e.action == "reject"}
    for step, who in (("reject", "admin"), ("timeout", "timeout")):
        outcome = outcomes[step]
        assert outcome["state"] == "success"
        assert outcome["task_states"]["promote_candidate"] == "skipped"
        assert outcome["task_states"]["settle_approval"] == "success"
        entry = rejections[outcome["run_id"]]
        assert entry.to_version == outcome["returns"]["train_candidate"]["version"]
        assert entry.from_version == champion
        assert entry.approved_by == who and entry.reason == f"approval refused ({who})"
    assert approvals["seen"]["timeout"]["state_before_sweep"] == "awaiting_input"


def test_rejection_alerts_arrive(approvals):
    mails = [m for m in approvals["mail"] if m["event"] == "rejection"]
    assert len(mails) == 2 and len([p for p in approvals["posts"] if "rejected" in p["json"]["text"]]) == 2
    assert "approval refused (admin)" in mails[0]["body"] and "approval refused (timeout)" in mails[1]["body"]
    promoted = [m for m in approvals["mail"] if m["event"] == "promotion"]
    assert len(promoted) == 1 and "Approved by admin" in promoted[0]["body"]
