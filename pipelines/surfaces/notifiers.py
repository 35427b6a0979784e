"""Airflow notifiers for the pipeline's alerts (with airflow_adapter, the modules of `pipelines` importing Airflow).

`PipelineAlert(event)` goes into a task's `on_success_callback` or `on_failure_callback`. It builds the
message from the task's own exception or return value (`pipelines.surfaces.alerts`) and sends it to the targets in the
config's `alerts` section: email through the SMTP provider's hook and an Airflow SMTP connection, and a
Slack-compatible JSON POST through the Slack provider's webhook hook and a `slackwebhook` connection.
A target that cannot be reached is logged and does not stop the other target or fail the task.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

from pipelines.core.config import PipelineConfig, config_for_dag
from pipelines.core.contracts import AlertEvent
from pipelines.core.errors import PartitionQuarantinedError, PipelineError
from pipelines.storage.partitions import partition_date
from pipelines.surfaces import alerts

log = logging.getLogger(__name__)


class PipelineAlert(BaseNotifier):
    """Send one kind of pipeline alert (an event of `alerts.events`) when the callback it is attached to fires."""

    template_fields = ()

    def __init__(self, event: AlertEvent) -> None:
        super().__init__()
        self.event = event

    def notify(self, context: Any) -> None:
        config = config_for_dag(context["ti"].dag_id)
        alert = build_alert(config, self.event, context)
        if alert is None or alert.event not in config.alerts.events:
            return
        deliver(config, alert)


def build_alert(config: PipelineConfig, event: AlertEvent, context: Any) -> alerts.Alert | None:
    """Return the alert for this callback, or None when there is nothing to say (e.g. an approval that promoted).

    What an alert reports comes from its own task: the exception of a failed task, else the task's return value.
    """
    ti = context["ti"]
    run = alerts.run_url(config, ti.dag_id, ti.run_id)
    if event == AlertEvent.TASK_FAILURE:
        exception = context.get("exception")
        cause = getattr(exception, "__cause__", None)
        quarantined = cause if isinstance(cause, PartitionQuarantinedError) else exception
        if isinstance(quarantined, PartitionQuarantinedError) and quarantined.ds:
            return alerts.quarantine_alert(
                config, quarantined.ds, quarantined.failures, quarantined.rows, run, quarantined.acceptable
            )
        task_run = alerts.run_url(config, ti.dag_id, ti.run_id, ti.task_id)
        return alerts.task_failure_alert(
            config, ti.dag_id, ti.task_id, _night(context), str(exception or "unknown error"), task_run
        )
    value = ti.xcom_pull(task_ids=ti.task_id)
    if value is None:  # e.g. settle_approval after an approval that promoted: nothing was rejected
        return None
    builders: dict[AlertEvent, Any] = {
        AlertEvent.DATA_QUALITY: alerts.data_quality_alert,
        AlertEvent.RETRAIN_DECISION: alerts.retrain_decision_alert,
        AlertEvent.EPISODE_REMINDER: alerts.episode_reminder_alert,
        AlertEvent.NOT_HELPING: alerts.not_helping_alert,
        AlertEvent.PROMOTION: alerts.promotion_alert,
        AlertEvent.REJECTION: alerts.rejection_alert,
        AlertEvent.ROLLBACK: alerts.rollback_alert,
    }
    alert: alerts.Alert | None = builders[event](config, value, run)
    return alert


def _night(context: Any) -> str | None:
    """The partition a failed run was for, worked out as the run's own first task does (runs with a `ds` Param)."""
    params = context.get("params") or {}
    if "ds" not in params:
        return None
    try:
        return partition_date(params.get("ds"), context.get("data_interval_start"))
    except PipelineError:
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
