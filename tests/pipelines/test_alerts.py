"""Alert messages and their delivery to a real local SMTP server and HTTP receiver through the provider hooks."""

import json

import pytest

from pipelines.core.config import load_config
from pipelines.core.contracts import AuditEntry, Comparison, Decision, GateResult
from pipelines.core.errors import ConfigError
from pipelines.surfaces import alerts
from pipelines.surfaces.notifiers import deliver
from tests.alert_receivers import AlertReceivers, free_port
from tests.conftest import write_config


@pytest.fixture
def receivers(monkeypatch):
    with AlertReceivers() as r:
        for name, value in r.env.items():
            monkeypatch.setenv(name, value)
        yield r


def _config(tmp_path, **alert_overrides):
    return load_config(write_config(tmp_path, alerts={**AlertReceivers.config, **alert_overrides}))


ENTRY = AuditEntry(
    at="2026-10-12T02:10:00+00:00",
    action="promote",
    model="credit_default",
    from_version="3",
    to_version="4",
    reason="gate passed",
    approved_by="alice",
    gate=GateResult(
        passed=True,
        candidate="4",
        champion="3",
        evaluation_days=["2026-10-09"],
        comparison=Comparison(difference=0.031, ci_low=0.012, ci_high=0.05),
    ),
)


def test_an_alert_reaches_both_receivers(tmp_path, receivers):
    config = _config(tmp_path)
    alert = alerts.promotion_alert(
        config, ENTRY, alerts.run_url(config, "retrain_model", "manual__2026-10-12T02:00:00+00:00")
    )
    assert deliver(config, alert) == {"email": "sent", "webhook": "sent"}
    (mail,), (post,) = receivers.mail, receivers.posts
    assert mail["subject"] == "[credit_default] v4 promoted to champion (was v3)"
    assert mail["event"] == "promotion" and mail["to"] == ["ml-oncall@example.test"]
    assert "Gate on 2026-10-09: difference +0.0310 (95% CI +0.0120..+0.0500)" in mail["body"]
    assert (
        "https://airflow.example.test/dags/retrain_model/runs/manual__2026-10-12T02%3A00%3A00%2B00%3A00" in mail["body"]
    )
    assert post["path"] == "/T000/B000/alerts" and post["json"] == alert.slack_payload()
    assert post["json"]["text"].startswith("[credit_default] v4 promoted to champion (was v3)\n")
    assert "<https://airflow.example.test/monitoring/models/v4_vs_v3/gate.html|Gate comparison>" in json.dumps(
        post["json"]
    )


def test_one_unreachable_target_does_not_silence_the_other(tmp_path, receivers, monkeypatch):
    config = _config(tmp_path)
    closed = json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": free_port(),
            "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 5},
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", closed)
    outcome = deliver(
        config, alerts.rollback_alert(config, ENTRY.model_copy(update={"reason": "bad night"}), "https://x/run")
    )
    assert outcome["webhook"] == "sent"
    assert outcome["email"].startswith(("ConnectionRefusedError", "SMTPServerDisconnected", "OSError")), outcome[
        "email"
    ]
    assert receivers.posts and not receivers.mail


def test_without_targets_alerts_only_go_to_the_log(tmp_path, receivers, caplog):
    config = load_config(write_config(tmp_path))
    decision = Decision(
        retrain=True, reasons=["drift share 0.36"], ds="2026-10-08", model_version="1", request=True, alert="opened"
    )
    alert = alerts.retrain_decision_alert(config, decision, "u")
    with caplog.at_level("WARNING"):
        assert deliver(config, alert) == {}
    assert "opened after ds=2026-10-08" in caplog.text and "retrain_model runs on this request" in caplog.text
    assert not receivers.mail and not receivers.posts


def test_email_bodies_escape_what_came_from_data(tmp_path):
    config = _config(tmp_path)
    alert = alerts.quarantine_alert(config, "2026-10-03", ["column 'x<script>' is missing"] * 12, 5000, "https://x/run")
    assert "x&lt;script&gt;" in alert.html() and "<script>" not in alert.html()
    assert "... and 2 more" in alert.text()
    assert (
        "Fix or replace incoming/ds=2026-10-03 and rerun batch_scoring with ds=2026-10-03. The data is broken"
        in alert.text()
    )
    assert "accept_quarantine" not in alert.text()  # broken data: acceptance is never offered


def test_a_quarantine_alert_offers_acceptance_only_when_it_can_be_accepted(tmp_path):
    config = _config(tmp_path)
    alert = alerts.quarantine_alert(config, "2026-10-03", ["column 'age' ..."], 5000, "https://x/run", acceptable=True)
    assert "; if the data is right after all, rerun it with accept_quarantine set." in alert.text()


def test_alert_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="not an http"):
        load_config(write_config(tmp_path, alerts={"base_url": "airflow.local"}))
    with pytest.raises(ConfigError, match="events"):
        load_config(write_config(tmp_path, alerts={"events": ["promotions"]}))


def test_webhook_text_and_blocks_never_let_a_data_value_act(tmp_path):
    config = _config(tmp_path)
    hostile = [
        "<!channel> file <https://evil.example|click>.parquet",
        "@channel @here look",
        "[docs](https://evil.example)",
    ]
    alert = alerts.quarantine_alert(config, "2026-10-03", hostile, 10, "https://airflow.example/run")
    payload = alert.slack_payload()
    shown = [payload["text"], *(b["text"]["text"] for b in payload["blocks"] if b["type"] == "section")]
    for text in shown:
        assert "<!channel>" not in text and "<https://evil" not in text
        assert "@channel" not in text and "@here" not in text and "](https://evil" not in text
        assert "&lt;!channel&gt; file &lt;https://evil.example|click&gt;.parquet" in text
    assert "<https://airflow.example/run|Airflow run>" in payload["text"]  # our own links stay links


def _episode_decision(alert, request=False, state="waiting", reminders=0):
    from pipelines.core.contracts import Episode

    episode = Episode(
        id=4,
        model_name="credit_default",
        state=state,
        rules=["drift"],
        reasons=["drift share 0.40 <script>alert(1)</script>"],
        opened_ds="2026-10-03",
        onset="2026-10-01",
        reminders=reminders,
        candidates=["7"],
    )
    return Decision(
        retrain=True,
        reasons=["drift share 0.41 @channel"],
        rules=["drift"],
        ds="2026-10-10",
        model_version="3",
        request=request,
        alert=alert,
        episode=episode,
        outcome="episode 4: waiting for labelled data; retraining is requested after the partition of 2026-10-08",
    )


def test_an_episode_alerts_when_it_opens_and_reminds_grouped_never_per_night(tmp_path):
    config = _config(tmp_path)
    opened = alerts.retrain_decision_alert(config, _episode_decision("opened"), "https://x/run")
    assert "episode 4 opened after ds=2026-10-10" in opened.subject and "(drift since 2026-10-01)" in opened.subject
    assert "after the partition of 2026-10-08" in opened.text()  # when retraining runs
    assert opened.links["Episode"] == "https://airflow.example.test/monitoring/#episode-4"
    held = _episode_decision(None)
    assert alerts.retrain_decision_alert(config, held, "r") is None  # a held night says nothing
    assert alerts.episode_reminder_alert(config, held, "r") is None
    assert alerts.retrain_decision_alert(config, _episode_decision("reminder"), "r") is None
    reminder = alerts.episode_reminder_alert(config, _episode_decision("reminder", reminders=2), "https://x/run")
    assert reminder.event == "episode_reminder"
    assert "reminder: episode 4 open since ds=2026-10-03 (waiting, reminder 2)" in reminder.subject
    assert "candidates: v7" in reminder.text() and reminder.links["Episode"].endswith("#episode-4")
    assert "<script>" not in reminder.html() and "&lt;script&gt;" in reminder.html()  # data never acts
    assert "@\u200bchannel" in reminder.slack_payload()["text"]
