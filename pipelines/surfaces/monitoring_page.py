"""The "Model monitoring" page: one row per night, report links and trend charts (plain HTML + a PNG chart)."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipelines.core.config import ModelSource, PipelineConfig
from pipelines.core.contracts import AuditAction, EpisodeState
from pipelines.core.errors import AuditIntegrityError
from pipelines.core.paths import COMPARISONS, REPORTS
from pipelines.governance import audit
from pipelines.governance.registry import ARTIFACTS_REMOVED_TAG, Registry
from pipelines.storage import episodes, history, report_store
from pipelines.storage.urls import MODEL_FILES, NIGHT_PAGES, REPORT_FILES, comparison_route, report_route

_DS = re.compile(r"^ds=\d{4}-\d{2}-\d{2}$")
_PAIR = re.compile(r"^v\d{1,9}_vs_v\d{1,9}$")


def resolve_report(config: PipelineConfig, partition: str, name: str) -> Path | None:
    """Return the report file for `ds=YYYY-MM-DD/name`, or None: only known report names, never outside reports/."""
    if not _DS.match(partition) or name not in REPORT_FILES:
        return None
    root = (config.work_root / REPORTS).resolve()
    path = (root / partition / name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def resolve_model_report(config: PipelineConfig, pair: str, name: str) -> Path | None:
    """Return a gate comparison file for `v<candidate>_vs_v<champion>/name`, or None (same rules as reports)."""
    if not _PAIR.match(pair) or name not in MODEL_FILES:
        return None
    root = (config.work_root / REPORTS / COMPARISONS).resolve()
    path = (root / pair / name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def read_report(config: PipelineConfig, partition: str, name: str) -> bytes | None:
    """Return a night's report file (the same names and rules as `resolve_report`), or None."""
    if not _DS.match(partition) or name not in REPORT_FILES:
        return None
    return _read(config, f"{REPORTS}/{partition}", name, lambda: resolve_report(config, partition, name))


def read_column_page(config: PipelineConfig, partition: str, position: int) -> str | None:
    """Render a column's drift page of a night from its stored statistics (`drift_columns.json`), or None."""
    import json

    from pipelines.steps.drift_pages import column_page

    stored = read_report(config, partition, "drift_columns.json")
    return column_page(json.loads(stored), position) if stored else None


def read_model_report(config: PipelineConfig, pair: str, name: str) -> bytes | None:
    """Return a gate comparison file (the same names and rules as `resolve_model_report`), or None."""
    if not _PAIR.match(pair) or name not in MODEL_FILES:
        return None
    return _read(config, f"{REPORTS}/{COMPARISONS}/{pair}", name, lambda: resolve_model_report(config, pair, name))


def _read(config: PipelineConfig, folder: str, name: str, local: Callable[[], Path | None]) -> bytes | None:
    """From the report store when one is configured, else the file `local()` finds under the data root."""
    if report_store.location(config) is not None:
        return report_store.fetch(config, folder, name)
    path = local()
    return path.read_bytes() if path else None


def metric_columns(config: PipelineConfig, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per night, the estimated and realised values of retraining.metric (older binary rows: the ROC AUC columns)."""
    metric = config.retraining.metric
    estimated = frame.get("estimated_metric", pd.Series(float("nan"), index=frame.index)).astype(float)
    realised = frame.get("realised_metric", pd.Series(float("nan"), index=frame.index)).astype(float)
    if metric == "roc_auc":
        estimated = estimated.fillna(frame["estimated_roc_auc"].astype(float))
        realised = realised.fillna(frame["realised_roc_auc"].astype(float))
    return estimated, realised


def trend_chart_png(frame: pd.DataFrame, metric: str = "roc_auc") -> bytes:
    """Return a PNG of drift share and the estimated/realised metric per night, model version changes marked.

    `frame` holds `estimated` and `realised` columns of the metric (see `metric_columns`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
    nights = pd.to_datetime(frame["ds"])
    top.plot(nights, frame["drift_share"], marker="o", color="tab:red", label="drift share")
    top.set_ylabel("drift share")
    top.set_ylim(0, 1)
    bottom.plot(nights, frame["estimated"], marker="o", label=f"estimated {metric}")
    bottom.plot(nights, frame["realised"], marker="s", label=f"realised {metric}")
    bottom.set_ylabel(metric)
    versions = frame["model_version"].tolist()
    for i in range(1, len(versions)):
        if versions[i] != versions[i - 1]:
            for axis in (top, bottom):
                axis.axvline(nights.iloc[i], color="gray", linestyle="--")
            top.annotate(f"v{versions[i]}", (nights.iloc[i], 0.92), color="gray")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: object, pattern: str = "{:.3f}") -> str:
    return "-" if value is None or (isinstance(value, float) and pd.isna(value)) else pattern.format(value)


def _label_issues(realised: object) -> str:
    issues = ((realised or {}).get("labels") or {}).get("issues") if isinstance(realised, dict) else None
    return "; ".join(issues or [])


def _links(ds: str, reports: dict | None, base: str) -> str:
    if reports and reports.get("expired_at"):
        when = html.escape(str(reports["expired_at"]))
        return f'<span class="expired" title="HTML reports removed after the night of {when}">expired</span>'
    names = [n for n in NIGHT_PAGES if reports and any(str(p).endswith(f"ds={ds}/{n}") for p in reports.values())]
    return " ".join(
        f'<a href="{html.escape(report_route(ds, n, base))}">{n.removesuffix(".html").replace("_", " ")}</a>'
        for n in names
    )


STAGES = (  # the night's tasks, in order, as the page names them
    ("validate_partition", "validate"),
    ("score_partition", "score"),
    ("monitor_night", "monitor"),
    ("decide_retraining", "decide"),
)


def _stages(seconds: object, engine: object, engine_rows: object, reason: object) -> str:
    """Seconds per stage of the night (a cell), the scoring engine and, when scikit-learn scored, why."""
    times = seconds if isinstance(seconds, dict) else {}
    parts = [f"{label} {times[key]:.1f}" for key, label in STAGES if isinstance(times.get(key), int | float)]
    cell = html.escape(" · ".join(parts) or "-")
    if isinstance(engine, str) and engine:
        rows = engine_rows if isinstance(engine_rows, dict) else {}
        split = ", ".join(f"{name} {count:,}" for name, count in rows.items() if count)
        title = f' title="{html.escape(str(reason))}"' if reason else ""
        cell += f"<br><small{title}>{html.escape(engine)}{html.escape(f' ({split} rows)' if split else '')}</small>"
    return cell


def _estimate_error(row: dict) -> str:
    """How far the estimate was off, once the realised value exists (estimate minus realised)."""
    estimated, realised = row.get("estimated"), row.get("realised")
    if estimated is None or realised is None or pd.isna(estimated) or pd.isna(realised):
        return ""
    return f" <small>(estimate off by {estimated - realised:+.3f})</small>"


def _drifted(columns: list[str] | None, shown: int = 8) -> str:
    """The night's drifted columns, the first `shown` named (the night's drift overview ranks them all)."""
    columns = list(columns or [])
    more = f" and {len(columns) - shown} more" if len(columns) > shown else ""
    return html.escape(", ".join(columns[:shown]) + more) or "-"


def render_page(config: PipelineConfig, base: str, overview: str | None = None) -> str:
    """Return the monitoring page: the trend chart and one table row per night and model version.

    `overview`: the address of the overview of all models, linked at the top (in a deployment of many models).
    """
    back = f'<p><a href="{html.escape(overview)}">all models</a></p>' if overview else ""
    frame = history.read_history(config)
    frame["estimated"], frame["realised"] = metric_columns(config, frame)
    metric = config.retraining.metric
    rows = []
    for r in frame.sort_values("ds", ascending=False).to_dict("records"):
        failures = "; ".join(r["validation_failures"] or [])
        warnings = list(r.get("validation_warnings") or [])
        if not r["validation_success"]:
            state, css, detail = "quarantined", "bad", failures
        elif warnings:
            state, css, detail = f"{len(warnings)} warning(s)", "warn", "; ".join(warnings)
        else:
            state, css, detail = "passed", "ok", ""
        rows.append(
            "<tr>"
            f"<td>{html.escape(r['ds'])}</td><td>v{html.escape(str(r['model_version']))}</td>"
            f'<td class={css} title="{html.escape(detail)}">{state}</td>'
            f"<td>{_fmt(r['drift_share'], '{:.2f}')}</td><td>{_drifted(r['drifted_columns'])}</td>"
            f"<td>{_fmt(r['estimated'])}</td><td>{_fmt(r['realised'])}{_estimate_error(r)}</td>"
            f'<td title="{html.escape(_label_issues(r["realised_metrics"]))}">{_fmt(r["label_coverage"], "{:.0%}")}</td>'
            f"<td>{_decision(r)}</td>"
            f"<td>{html.escape('; '.join(r['decision_reasons'] or []))}</td>"
            f"<td>{_stages(r.get('task_seconds'), r.get('scoring_engine'), r.get('scoring_engine_rows'), r.get('scoring_engine_reason'))}</td>"
            f"<td>{_links(r['ds'], r['reports'], base)}</td>"
            "</tr>"
        )
    chart = ""
    champions = _audit_rows(config, base)
    if len(frame):
        png = base64.b64encode(trend_chart_png(frame.sort_values("ds"), metric)).decode()
        chart = f'<img alt="drift share and {metric} per night" src="data:image/png;base64,{png}">'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model monitoring</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}.bad{{background:#fdd}}.ok{{background:#dfd}}.warn{{background:#ffe9b3}}</style>
</head><body>{back}<h1>Model monitoring: {html.escape(config.model.registered_name)}
<small>({html.escape(str(config.model.kind))}{", external" if config.model.external else ""})</small></h1>{chart}
<table id="nights"><thead><tr><th>night</th><th>model</th><th>validation</th><th>drift share</th><th>drifted columns</th>
<th>estimated {html.escape(metric)}</th><th>realised {html.escape(metric)}</th><th>labels</th><th>decision</th><th>reasons</th><th>seconds per stage</th>
<th>reports</th></tr></thead>
<tbody>{"".join(rows) or "<tr><td colspan=12>No night has been monitored yet.</td></tr>"}</tbody></table>
{_segment_section(config, frame)}
<h2>Episodes (newest first)</h2>
<p>One episode per problem: its first night alerts and it requests retraining once, when a run can train.
{_rejected_count(config)}</p>
<table id="episodes"><thead><tr><th>episode</th><th>state</th><th>opened</th><th>drift onset</th><th>rules</th><th>reasons</th>
<th>requests</th><th>reminders</th><th>candidates</th><th>outcome</th></tr></thead>
<tbody>{_episode_rows(config) or "<tr><td colspan=10>No episode yet.</td></tr>"}</tbody></table>
<h2>Champion history (audit log, newest first)</h2>
<table id="champions"><thead><tr><th>when (UTC)</th><th>action</th><th>from</th><th>to</th><th>by</th><th>reason</th><th>gate</th>
<th>Airflow run</th></tr></thead><tbody>{champions or "<tr><td colspan=8>No alias has moved yet.</td></tr>"}</tbody></table>
</body></html>"""


def _decision(row: dict) -> str:
    """The night's decision, the episode it belongs to (linked) and what its request did."""
    decision = html.escape(row.get("decision") or "-")
    episode = row.get("episode_id")
    if episode is None or pd.isna(episode):
        return decision
    outcome = html.escape(str(row.get("request_outcome") or ""))
    return f'{decision} <a href="#episode-{int(episode)}">episode {int(episode)}</a><br><small>{outcome}</small>'


def _segment_section(config: PipelineConfig, frame: pd.DataFrame) -> str:
    """The segments furthest below their reference: on the newest labelled night, and on the newest night's estimate."""
    if not config.monitoring.segments or frame.empty:
        return ""
    metric = html.escape(config.retraining.metric)
    tables = []
    for column, what in (("segment_realised", "realised"), ("segment_estimates", "estimated")):
        if column not in frame:
            continue
        nights = frame[frame[column].map(lambda v: isinstance(v, dict) and bool(v.get("worst")))]
        if nights.empty:
            continue
        night = nights.sort_values("ds").iloc[-1]
        rows = "".join(
            f"<tr><td>{html.escape(str(r['segment']))}</td><td>{r['rows']:,}</td>"
            f"<td>{_fmt(r.get('value', r.get('estimated')))}"
            + (f" [{_fmt(r.get('low'))}, {_fmt(r.get('high'))}]" if what == "realised" else "")
            + f"</td><td>{_fmt(r.get('reference'))}</td><td>{_fmt(r.get('drop'))}</td></tr>"
            for r in night[column]["worst"]
        )
        tables.append(
            f"<h3>{what.capitalize()} {metric}: the segments furthest below their reference on "
            f"{html.escape(str(night['ds']))} (v{html.escape(str(night['model_version']))})</h3>"
            f'<table class="segments" id="segments-{what}"><thead><tr><th>segment</th><th>rows</th>'
            f"<th>{what} {metric}{' [95% interval]' if what == 'realised' else ''}</th><th>reference</th>"
            f"<th>drop</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    columns = html.escape(", ".join(config.monitoring.segments))
    return f"<h2>Segments ({columns})</h2>" + ("".join(tables) or "<p>No segment can be ranked yet.</p>")


def _episode_rows(config: PipelineConfig) -> str:
    rows = []
    for e in episodes.episodes(config):
        css = "ok" if not e.open else ("bad" if e.state == EpisodeState.BACKOFF else "warn")
        rows.append(
            f'<tr id="episode-{e.id}"><td>{e.id}</td><td class={css}>{html.escape(e.state)}</td>'
            f"<td>{html.escape(e.opened_ds)}</td><td>{html.escape(e.onset or '-')}</td>"
            f"<td>{html.escape(', '.join(e.rules))}</td><td>{html.escape('; '.join(e.reasons))}</td>"
            f"<td>{e.requests}{' (last ' + html.escape(e.request_ds) + ')' if e.request_ds else ''}</td>"
            f"<td>{e.reminders}</td><td>{html.escape(', '.join('v' + v for v in e.candidates) or '-')}</td>"
            f"<td>{html.escape(e.outcome)}{' (closed ' + html.escape(e.closed_ds) + ')' if e.closed_ds else ''}</td></tr>"
        )
    return "".join(rows)


def _rejected_count(config: PipelineConfig) -> str:
    """How many candidates were rejected (audit log), and how many of them retention has cleaned."""
    try:
        rejected = {e.to_version for e in audit.read_audit(config) if e.action == AuditAction.REJECT}
    except AuditIntegrityError:
        return ""
    if not rejected:
        return "No candidate has been rejected."
    keep = config.promotion.keep_rejected_days
    retention = f"their artifacts are removed {keep:g} days after the rejection" if keep is not None else "kept"
    return (
        f"Rejected candidates: {len(rejected)} (registered, no alias, tagged with why; {retention}: "
        f"{_cleaned(config)} removed so far)."
    )


def _cleaned(config: PipelineConfig) -> str:
    try:
        return str(sum(ARTIFACTS_REMOVED_TAG in v.tags for v in Registry.open(config).rejected_versions()))
    except Exception:  # noqa: BLE001 - the count is a courtesy; the page shows without the model store
        return "unknown"


def _audit_rows(config: PipelineConfig, base: str) -> str:
    try:
        trail = audit.read_trail(config)
    except AuditIntegrityError as exc:
        return f"<tr><td colspan=8 class=bad>{html.escape(str(exc))}</td></tr>"
    entries = trail.entries
    rows = [f"<tr><td colspan=8 class=bad>{html.escape(w)}</td></tr>" for w in trail.warnings]
    for e in reversed(entries):
        cell = "-"
        if e.gate is not None and e.gate.comparison is not None and e.gate.pair:
            c, pair = e.gate.comparison, e.gate.pair
            cell = (
                f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] "
                f'<a href="{comparison_route(pair, "candidate.html", base)}">candidate</a> '
                f'<a href="{comparison_route(pair, "champion.html", base)}">champion</a>'
            )
        frm = f"v{e.from_version}" if e.from_version else "-"
        rows.append(
            f"<tr><td>{html.escape(e.at[:19])}</td><td>{html.escape(e.action)}</td><td>{html.escape(frm)}</td>"
            f"<td>v{html.escape(e.to_version)}</td><td>{html.escape(e.approved_by)}</td>"
            f"<td>{html.escape(e.reason)}</td><td>{cell}</td><td>{html.escape(e.airflow_run_id)}</td></tr>"
        )
    return "".join(rows)


def render_overview(sources: list[ModelSource], base: str, pending: dict[str, int] | None = None) -> str:
    """Return the overview of a deployment's models: one row each, linking to its page (`<base>/model/<key>/`).

    `pending`: open approvals per DAG id (the api-server counts them). A broken config is a row with its error.
    """
    pending = pending or {}
    rows = []
    for source in sources:
        key = source.suffix.removeprefix("__")
        name = html.escape(source.file.name)
        if source.config is None:
            rows.append(f"<tr><td>{name}</td><td colspan=9 class=bad>{html.escape(str(source.error))}</td></tr>")
            continue
        rows.append(
            _overview_row(source.config, f"{base}/model/{key}/", pending.get(source.dag_id("retrain_model"), 0))
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model monitoring</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}.bad{{background:#fdd}}.ok{{background:#dfd}}.warn{{background:#ffe9b3}}</style>
</head><body><h1>Model monitoring: {len(sources)} model(s)</h1>
<table id="models"><thead><tr><th>model</th><th>kind</th><th>champion</th><th>last night</th><th>status</th>
<th>drift share</th><th>metric</th><th>estimated</th><th>realised</th><th>warnings</th><th>pending approvals</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></body></html>"""


def _overview_row(config: PipelineConfig, link: str, approvals: int) -> str:
    frame = history.read_history(config)
    try:
        last_move = audit.expected_champion(audit.read_audit(config))
        champion = f"v{last_move.to_version}" if last_move else "-"
    except AuditIntegrityError:
        champion = "audit log fails verification"
    name = f'<a href="{html.escape(link)}">{html.escape(config.model.registered_name)}</a>'
    kind = html.escape(str(config.model.kind) + (" (external)" if config.model.external else ""))
    metric = html.escape(config.retraining.metric)
    if frame.empty:
        cells = "<td>-</td><td>no night yet</td><td>-</td>" + f"<td>{metric}</td><td>-</td><td>-</td><td>-</td>"
        return f"<tr><td>{name}</td><td>{kind}</td><td>{html.escape(champion)}</td>{cells}<td>{approvals}</td></tr>"
    estimated, realised = metric_columns(config, frame)
    last = frame.sort_values(["ds", "updated_at"]).iloc[-1]  # the night's newest record (a rescoring's)
    warnings = len(last["validation_warnings"] or [])
    if not last["validation_success"]:
        status, css = "quarantined", "bad"
    elif last["decision"] == "retrain":
        status, css = "retrain requested", "warn"
    else:
        status, css = str(last["decision"] or "monitored"), "ok"
    newest_realised = realised.dropna()
    tonight = estimated.to_dict().get(last.name)
    return (
        f"<tr><td>{name}</td><td>{kind}</td><td>{html.escape(champion)}</td><td>{html.escape(str(last['ds']))}</td>"
        f"<td class={css}>{html.escape(status)}</td><td>{_fmt(last['drift_share'], '{:.2f}')}</td><td>{metric}</td>"
        f"<td>{_fmt(tonight)}</td><td>{_fmt(newest_realised.iloc[-1] if len(newest_realised) else None)}</td>"
        f"<td>{warnings}</td><td>{approvals}</td></tr>"
    )
