"""Alert messages: what happened, for which night or model version, and links to the run and the report.

Composition only; `pipelines.surfaces.notifiers` turns Airflow callbacks into these and delivers them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import AlertEvent, AuditEntry, Decision, Episode, GateResult, Lesson, NightSummary
from pipelines.storage.urls import GATE_PAGE, comparison_route, model_base, report_route


@dataclass
class Alert:
    """One alert: a subject line, plain-text lines, and named links."""

    event: AlertEvent
    subject: str
    lines: list[str]
    links: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """Plain text (the email's text part and the task log)."""
        links = [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join([self.subject, *self.lines, *links])

    def slack_payload(self) -> dict[str, Any]:
        """Slack incoming-webhook JSON: `text` for any receiver, `blocks` for Slack's layout.

        Subject and lines may quote data values; in both `text` and the blocks they are escaped so a value cannot
        form a link or a mention in Slack or in the Slack-compatible receivers that render Markdown
        (`<https://evil|click>`, `<!channel>`, `@channel`, `[label](https://evil)`). Only our own links are links.
        """
        links = " | ".join(f"<{url}|{_slack_escape(name)}>" for name, url in self.links.items())
        subject, body = _slack_escape(self.subject), _slack_escape("\n".join(self.lines))
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.subject[:150]}},  # plain text never acts
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:2900] or " "}},
        ]
        if links:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links[:2900]}]})
        return {"text": "\n".join(t for t in (subject, body, links) if t), "blocks": blocks}

    def html(self) -> str:
        """The email body."""
        lines = "".join(f"<p>{html.escape(line)}</p>" for line in self.lines)
        links = "".join(
            f'<li><a href="{html.escape(url)}">{html.escape(name)}</a></li>' for name, url in self.links.items()
        )
        return f"<h3>{html.escape(self.subject)}</h3>{lines}<ul>{links}</ul>"


_ZERO_WIDTH = "\u200b"


def _slack_escape(text: str) -> str:
    """Text as Slack and Markdown receivers show it, never acting: no <link|label>, <!channel>, @mention, [md](link)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("@", "@" + _ZERO_WIDTH).replace("](", "]" + _ZERO_WIDTH + "(")


def run_url(config: PipelineConfig, dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """Return the Airflow UI address of a DAG run (or of one task in it)."""
    url = f"{config.alerts.base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url


def report_url(config: PipelineConfig, ds: str, name: str) -> str:
    """Return the address of a night's report as served by the monitoring plugin."""
    return config.alerts.base_url + report_route(ds, name, model_base(config.page_key))


def quarantine_alert(
    config: PipelineConfig, ds: str, failures: list[str], rows: int, run: str, acceptable: bool = False
) -> Alert:
    """A night was refused; acceptance is offered only when an operator may accept it (no broken data)."""
    shown = failures[:10] + ([f"... and {len(failures) - 10} more"] if len(failures) > 10 else [])
    accept = (
        "; if the data is right after all, rerun it with accept_quarantine set."
        if acceptable
        else ". The data is broken (not readable as configured, or bad ids): it cannot be accepted."
    )
    return Alert(
        AlertEvent.QUARANTINE,
        f"[{config.model.registered_name}] partition ds={ds} quarantined ({rows:,} rows not scored)",
        [
            "It failed validation and was moved aside; the other nights go on.",
            *[f"- {f}" for f in shown],
            f"Fix or replace incoming/ds={ds} and rerun batch_scoring with ds={ds}{accept}",
        ],
        {"Airflow run": run, "Monitoring": f"{config.alerts.base_url}{model_base(config.page_key)}/"},
    )


def data_quality_alert(config: PipelineConfig, summary: NightSummary, run: str) -> Alert | None:
    """The night was scored, but checks set to `warn` found the data moved (or an operator accepted it)."""
    warnings, ds = summary.validation_warnings, summary.ds
    if not warnings:
        return None
    return Alert(
        AlertEvent.DATA_QUALITY,
        f"[{config.model.registered_name}] partition ds={ds}: {len(warnings)} data-quality warning(s), scored",
        [*warnings[:20], f"Warned columns count as drifted: drift share {summary.drift_share:.2f}."],
        {
            "validation report": report_url(config, ds, "validation.html"),
            "drift report": report_url(config, ds, "drift_overview.html"),
            "Airflow run": run,
        },
    )


def episode_url(config: PipelineConfig, episode: Episode | None) -> str:
    """The monitoring page at the episode's entry."""
    page = f"{config.alerts.base_url}{model_base(config.page_key)}/"
    return f"{page}#episode-{episode.id}" if episode is not None and episode.id is not None else page


def _episode_name(decision: Decision) -> str:
    return f"episode {decision.episode.id}" if decision.episode and decision.episode.id else "an episode"


def retrain_decision_alert(config: PipelineConfig, decision: Decision, run: str) -> Alert | None:
    """The one alert of a new episode: why it opened, and when retraining runs (now, or when labels allow)."""
    if decision.alert != "opened":
        return None
    episode = decision.episode
    if not config.model.retrains:
        what = (
            "This model is registered outside this product (model.external) and has no model.trainer: nothing "
            "retrains it here. Retrain it where it was trained and move its champion alias; the retraining Asset "
            f"event {config.retrain_asset_name} is emitted for any DAG or tool that listens."
        )
    elif decision.request:
        what = "retrain_model runs on this request."
    else:
        what = decision.outcome + "."
    onset = f" (drift since {episode.onset})" if episode and episode.onset else ""
    return Alert(
        AlertEvent.RETRAIN_DECISION,
        f"[{config.model.registered_name}] {_episode_name(decision)} opened after ds={decision.ds}: the champion "
        f"v{decision.model_version} may no longer hold{onset}",
        [
            "The monitoring found:",
            *[f"- {r}" for r in decision.reasons],
            what,
            "Further nights of this episode do not alert again; a reminder follows if it stays open without "
            f"progress (retraining.reminder_partitions {config.retraining.reminder_partitions}).",
        ],
        {
            "Episode": episode_url(config, episode),
            "Drift report": report_url(config, decision.ds, "drift_overview.html"),
            "Airflow run": run,
        },
    )


def episode_reminder_alert(config: PipelineConfig, decision: Decision, run: str) -> Alert | None:
    """A grouped reminder: the episode is still open; what it is waiting for and tonight's reasons."""
    episode = decision.episode
    if decision.alert != "reminder" or episode is None:
        return None
    return Alert(
        AlertEvent.EPISODE_REMINDER,
        f"[{config.model.registered_name}] reminder: {_episode_name(decision)} open since ds={episode.opened_ds} "
        f"({episode.state}, reminder {episode.reminders})",
        [
            f"Opened on {episode.opened_ds} because: " + "; ".join(episode.reasons[:5]),
            f"Now ({decision.ds}): {decision.outcome}.",
            f"Requests so far: {episode.requests}; candidates: "
            + (", ".join(f"v{v}" for v in episode.candidates) or "none")
            + ".",
            *[f"- {r}" for r in decision.reasons],
        ],
        {
            "Episode": episode_url(config, episode),
            "Drift report": report_url(config, decision.ds, "drift_overview.html"),
            "Airflow run": run,
        },
    )


def not_helping_alert(config: PipelineConfig, lesson: Lesson, run: str) -> Alert | None:
    """Once per episode: a candidate trained on the newest data did not fix a failing champion."""
    episode = lesson.episode
    if not lesson.not_helping or episode is None:
        return None
    return Alert(
        AlertEvent.NOT_HELPING,
        f"[{config.model.registered_name}] retraining is not helping (episode {episode.id}): a person has to look",
        [
            "The champion fails a performance rule, and a candidate trained on the newest data was not better:",
            *[f"- {r}" for r in episode.reasons[:10]],
            f"{episode.outcome}.",
            "Look at the features (a missing signal), the data (labels, a broken source) and the floor "
            "(retraining.realised_floor may be above what this data allows).",
        ],
        {"Episode": episode_url(config, episode), "Airflow run": run},
    )


def _gate_line(gate: GateResult | None) -> list[str]:
    if gate is None or gate.comparison is None:
        return []
    return [f"Gate on {', '.join(gate.evaluation_days)}: difference {gate.comparison.describe()}."]


def _gate_links(config: PipelineConfig, gate: GateResult | None) -> dict[str, str]:
    pair = gate.pair if gate is not None else None
    return (
        {"Gate comparison": config.alerts.base_url + comparison_route(pair, GATE_PAGE, model_base(config.page_key))}
        if pair
        else {}
    )


def promotion_alert(config: PipelineConfig, entry: AuditEntry, run: str) -> Alert:
    return Alert(
        AlertEvent.PROMOTION,
        f"[{entry.model}] v{entry.to_version} promoted to champion (was v{entry.from_version})",
        [
            f"Approved by {entry.approved_by}; reason: {entry.reason}.",
            *_gate_line(entry.gate),
            f"The next nightly run scores with v{entry.to_version}; roll back with the rollback_model DAG.",
        ],
        {**_gate_links(config, entry.gate), "Airflow run": run},
    )


def rejection_alert(config: PipelineConfig, entry: AuditEntry, run: str) -> Alert:
    return Alert(
        AlertEvent.REJECTION,
        f"[{entry.model}] candidate v{entry.to_version} rejected; "
        + (f"champion v{entry.from_version} stays" if entry.from_version else "there is no champion yet"),
        [f"Why: {entry.reason} (decided by {entry.approved_by}).", *_gate_line(entry.gate)],
        {**_gate_links(config, entry.gate), "Airflow run": run},
    )


def rollback_alert(config: PipelineConfig, entry: AuditEntry, run: str) -> Alert:
    return Alert(
        AlertEvent.ROLLBACK,
        f"[{entry.model}] rolled back: champion is v{entry.to_version} again (was v{entry.from_version})",
        [
            f"Requested by {entry.approved_by}; reason: {entry.reason}.",
            f"The next nightly run scores with v{entry.to_version}.",
        ],
        {"Airflow run": run},
    )


def task_failure_alert(
    config: PipelineConfig, dag_id: str, task_id: str, ds: str | None, error: str, run: str
) -> Alert:
    night = f" for ds={ds}" if ds else ""
    return Alert(
        AlertEvent.TASK_FAILURE,
        f"[{config.model.registered_name}] {dag_id}.{task_id} failed{night}",
        [
            f"Error: {error[:1500]}",
            "Open the task log from the link below; fix the cause and clear the task to rerun it.",
        ],
        {"Task log": run},
    )
