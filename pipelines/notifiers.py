"""Airflow notifiers for the pipeline's alerts (with airflow_adapter, the modules of `pipelines` importing Airflow).

`PipelineAlert(event)` goes into a task's `on_success_callback` or `on_failure_callback`. It builds the
message from the task's context and XCom (`pipelines.alerts`) and sends it to the targets in the
config's `alerts` section: email through the SMTP provider's hook and an Airflow SMTP connection, and a
Slack-compatible JSON POST through the Slack provider's webhook hook and a `slackwebhook` connection.
A target that cannot be reached is logged and does not stop the other target or fail the task.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

from pipelines import alerts
from pipelines.config import PipelineConfig, load_config
from pipelines.errors import PartitionQuarantinedError

log = logging.getLogger(__name__)


class PipelineAlert(BaseNotifier):
    """Send one kind of pipeline alert (an event of `alerts.events`) when the callback it is attached to fires."""

    template_fields = ()

    def __init__(self, event: str) -> None:
        super().__init__()
        self.event = event

    def notify(self, context: Any) -> None:
        config = load_config()
        alert = build_alert(config, self.event, context)
        if alert is None or alert.event not in config.alerts.events:
            return
        deliver(config, alert)


def build_alert(config: PipelineConfig, event: str, context: Any) -> alerts.Alert | None:
    """Return the alert for this callback, or None when there is nothing to say (e.g. an approval that promoted)."""
    ti = context["ti"]
    run = alerts.run_url(config, ti.dag_id, ti.run_id)
    if event == "task_failure":
        exception = context.get("exception")
        cause = getattr(exception, "__cause__", None)
        quarantined = cause if isinstance(cause, PartitionQuarantinedError) else exception
        ds = _night(ti)
        if isinstance(quarantined, PartitionQuarantinedError) and ds:
            return alerts.quarantine(config, ds, quarantined.failures, quarantined.rows, run)
        task_run = alerts.run_url(config, ti.dag_id, ti.run_id, ti.task_id)
        return alerts.task_failure(config, ti.dag_id, ti.task_id, ds, str(exception or "unknown error"), task_run)
    if event == "retrain_decision":
        decision = ti.xcom_pull(task_ids="decide_retraining")
        return alerts.retrain_decision(config, decision, run) if decision else None
    value = ti.xcom_pull(task_ids=ti.task_id)
    if event == "data_quality":
        return alerts.data_quality(config, value, run) if value else None
    if not value:  # e.g. settle_approval after an approval that promoted: nothing was rejected
        return None
    return {"promotion": alerts.promotion, "rejection": alerts.rejection, "rollback": alerts.rollback}[event](
        config, value, run
    )


def _night(ti: Any) -> str | None:
    if ti.dag_id != "batch_scoring":
        return None
    try:
        return ti.xcom_pull(task_ids="partition_date")
    except Exception:  # noqa: BLE001 - the night is a nicety in a failure alert, never a reason to lose it
        return None


def deliver(config: PipelineConfig, alert: alerts.Alert) -> dict[str, str]:
    """Send the alert to every configured target; return each target's outcome ("sent" or the error)."""
    log.warning("ALERT %s", alert.text())
    outcomes = {}
    targets = config.alerts
    if targets.email is not None:
        outcomes["email"] = _try(_send_email, targets.email, alert)
    if targets.webhook is not None:
        outcomes["webhook"] = _try(_send_webhook, targets.webhook, alert)
    return outcomes


def _try(send: Any, target: Any, alert: alerts.Alert) -> str:
    try:
        send(target, alert)
    except Exception as exc:  # noqa: BLE001 - one unreachable target must not silence the other
        log.error("alert %r not delivered to %s: %s: %s", alert.subject, target, type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"
    return "sent"


def _send_email(target: Any, alert: alerts.Alert) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=target.conn_id) as hook:
        hook.send_email_smtp(
            to=target.to,
            from_email=target.from_email or hook.from_email,
            subject=alert.subject,
            html_content=alert.html(),
            custom_headers={"X-Pipeline-Alert": alert.event},
        )


def _send_webhook(target: Any, alert: alerts.Alert) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    SlackWebhookHook(slack_webhook_conn_id=target.conn_id).send(**alert.slack_payload())
