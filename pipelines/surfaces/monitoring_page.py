"""The "Model monitoring" page: the state first, interactive charts (plotly.js, shipped with the plotly package and
served by the plugin), then one row per night with its request's outcome and links; and the reports it links."""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from pipelines.core.config import ModelSource, PipelineConfig
from pipelines.core.contracts import MOVES, AuditAction, EpisodeState
from pipelines.core.errors import AuditIntegrityError
from pipelines.core.kinds import metric as metric_spec
from pipelines.core.paths import COMPARISONS, QUARANTINE, QUARANTINE_RECORD, REPORTS
from pipelines.governance import audit
from pipelines.governance.registry import ARTIFACTS_REMOVED_TAG, Registry
from pipelines.steps.drift import threshold_ratio
from pipelines.storage import episodes, history, report_store
from pipelines.storage.urls import (
    GATE_PAGE,
    MODEL_FILES,
    NIGHT_PAGES,
    REPORT_FILES,
    comparison_route,
    quarantine_route,
    report_route,
)

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


def read_quarantine_record(config: PipelineConfig, partition: str) -> bytes | None:
    """Return a quarantined night's record (`quarantine/ds=YYYY-MM-DD/validation.json`), or None."""
    if not _DS.match(partition):
        return None

    def local() -> Path | None:
        root = (config.work_root / QUARANTINE).resolve()
        path = (root / partition / QUARANTINE_RECORD).resolve()
        return path if root in path.parents and path.is_file() else None

    return _read(config, f"{QUARANTINE}/{partition}", QUARANTINE_RECORD, local)


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


STATIC = Path(__file__).parent / "static"
PAGE_SCRIPT = "monitoring.js"  # the page's own script: charts and the nights table's sorting and filtering
TABLE_NIGHTS = 400  # the nights table shows at most this many nights (newest first); the history keeps them all
CHART_NIGHTS = 366  # nights in the trend charts
HEAT_NIGHTS, HEAT_COLUMNS = 60, 30  # the drift heat map: newest nights, most often drifted columns


def plotly_name() -> str:
    """The file name the chart library is served under (versioned: browsers may cache it)."""
    from importlib.metadata import version

    return f"plotly-{version('plotly')}.min.js"


def static_asset(name: str) -> bytes | None:
    """The page's script or the chart library (plotly.js as the installed plotly package ships it), else None.

    Only these two names are read (and kept in memory once read): any other name is None, never a cache entry."""
    if name == plotly_name():
        return _plotly_js()
    if name == PAGE_SCRIPT:
        return _page_script()
    return None


@functools.cache
def _plotly_js() -> bytes:
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


@functools.cache
def _page_script() -> bytes:
    return (STATIC / PAGE_SCRIPT).read_bytes()


def airflow_run(dag_id: str, run_id: object) -> str:
    """The Airflow UI's page of a DAG run."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(str(run_id), safe='')}"


def scoring_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The records in the order they were scored: by night, then by when each version scored it."""
    when = frame["recorded_at"] if "recorded_at" in frame else frame["updated_at"]
    ordered = frame.assign(_when=pd.to_datetime(when.fillna(frame["updated_at"]), utc=True))
    return ordered.sort_values(["ds", "_when"]).drop(columns="_when")


def latest_records(ordered: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """One record per night, the one scored last (a rescoring after a rollback supersedes the earlier one), and the
    superseded records of each night; `ordered` is the history in `scoring_order`."""
    if ordered.empty:
        return ordered, {}
    current = ordered.groupby("ds", sort=True).tail(1)
    older: dict[str, list[dict]] = {}
    for record in ordered.drop(index=current.index).to_dict("records"):
        older.setdefault(record["ds"], []).append(record)
    return current, older


def _status(record: dict) -> tuple[str, str, str]:
    """(status, css class, detail) of a night: quarantined, warned or passed."""
    if not record["validation_success"]:
        return "quarantined", "bad", "; ".join(record["validation_failures"] or [])
    warnings = list(record.get("validation_warnings") or [])
    if warnings:
        return "warned", "warn", "; ".join(warnings)
    return "passed", "ok", ""


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 0.05 else "<0.1"


def _stages(record: dict) -> str:
    """The night's seconds: the total, then each stage (they add up to the total), the scoring engine and why."""
    stored = record.get("task_seconds")
    times: dict = stored if isinstance(stored, dict) else {}
    parts = [(label, float(times[key])) for key, label in STAGES if isinstance(times.get(key), int | float)]
    if not parts:
        return "<td>-</td>"
    total = sum(value for _, value in parts)
    cell = f"<b>{html.escape(_seconds(total))} s</b><br><small>" + html.escape(
        " + ".join(f"{label} {_seconds(v)}" for label, v in parts)
    )
    engine, rows = record.get("scoring_engine"), record.get("scoring_engine_rows")
    if isinstance(engine, str) and engine:
        split = ", ".join(
            f"{name} {count:,}" for name, count in (rows if isinstance(rows, dict) else {}).items() if count
        )
        reason = record.get("scoring_engine_reason")
        title = f' title="{html.escape(str(reason))}"' if reason else ""
        cell += f"<br><span{title}>{html.escape(engine)}{html.escape(f' ({split} rows)' if split else '')}</span>"
    return f'<td data-sort="{total:.3f}">{cell}</small></td>'


def _realised_cell(record: dict) -> str:
    value = record.get("realised")
    if value is None or pd.isna(value):
        return "<td>-</td>" if record["validation_success"] else "<td></td>"
    interval = (record.get("realised_metrics") or {}).get("interval") or {}
    low, high = interval.get("low"), interval.get("high")
    band = f" <small>[{low:.3f}, {high:.3f}]</small>" if low is not None and high is not None else ""
    return f'<td data-sort="{value:.6f}">{value:.3f}{band}{_estimate_error(record)}</td>'


def _request_cell(record: dict, retrain_dag: str) -> str:
    """The decision, its episode (linked), what the night's request did and what the run it started did (linked)."""
    decision = html.escape(record.get("decision") or "-")
    episode = record.get("episode_id")
    if episode is None or pd.isna(episode):
        return f"<td>{decision}</td>"
    cell = f'{decision} <a href="#episode-{int(episode)}">episode {int(episode)}</a>'
    outcome = str(record.get("request_outcome") or "")
    if outcome:
        shown = outcome if len(outcome) <= 160 else outcome[:160] + "…"
        cell += f'<br><small title="{html.escape(outcome)}">{html.escape(shown)}</small>'
    result, run = record.get("request_result"), record.get("request_run_id")
    if result:
        link = f' (<a href="{html.escape(airflow_run(retrain_dag, run))}">retraining run</a>)' if run else ""
        cell += f'<br><span class="result">→ {html.escape(str(result))}{link}</span>'
    return f"<td>{cell}</td>"


def _validation_cell(record: dict, base: str) -> str:
    state, css, detail = _status(record)
    cell = state
    if detail:
        shown = detail if len(detail) <= 240 else detail[:240] + "…"
        cell += f"<br><small>{html.escape(shown)}</small>"
    if state == "quarantined":
        cell += f' <a href="{html.escape(quarantine_route(record["ds"], base))}">quarantine record</a>'
    return f'<td class="{css}">{cell}</td>'


def _night_row(record: dict, older: list[dict], base: str, dags: dict[str, str]) -> str:
    state, _, _ = _status(record)
    ds = html.escape(record["ds"])
    run = record.get("airflow_run_id")
    night = ds + (
        f'<br><a href="{html.escape(airflow_run(dags["batch_scoring"], run))}">Airflow run</a>' if run else ""
    )
    if older:
        earlier = "".join(
            f"<li>v{html.escape(str(o['model_version']))}: {html.escape(_status(o)[0])}, "
            f"{html.escape(o.get('decision') or '-')}, drift share {_fmt(o['drift_share'], '{:.2f}')}</li>"
            for o in older
        )
        night += f"<details><summary>{len(older)} superseded</summary><ul>{earlier}</ul></details>"
    drifted = record["drifted_columns"] or []
    share = _number(record["drift_share"])
    drift = "-" if share is None else f"{share:.2f}<br><small>{len(drifted)} column(s): {_drifted(drifted)}</small>"
    return (
        f'<tr data-status="{state}" data-decision="{html.escape(str(record.get("decision") or ""))}">'
        f'<td data-sort="{ds}">{night}</td><td>v{html.escape(str(record["model_version"]))}</td>'
        f"{_validation_cell(record, base)}"
        f'<td data-sort="{-1 if share is None else share:.4f}">{drift}</td>'
        f"<td>{_fmt(record['estimated'])}</td>{_realised_cell(record)}"
        f'<td title="{html.escape(_label_issues(record["realised_metrics"]))}">{_fmt(record["label_coverage"], "{:.0%}")}</td>'
        f"{_request_cell(record, dags['retrain_model'])}"
        f"{_stages(record)}"
        f"<td>{_links(record['ds'], record['reports'], base)}</td>"
        "</tr>"
    )


def _cards(config: PipelineConfig, versions: list[str]) -> dict[str, tuple[float | None, float]]:
    """Per model version: its held-out value of retraining.metric and one night's chance variation (model card)."""
    metric, found = config.retraining.metric, {}
    try:
        models = Registry.open(config)
        for version in versions:
            card = models.model_card(models.version(version))
            found[version] = (card.metrics.get(metric), float(card.metric_noise.get(metric, 0.0)))
    except Exception:  # noqa: BLE001 - without the model store the charts show no held-out or alarm lines
        pass
    return found


def _alarm(config: PipelineConfig, held_out: float | None, noise: float) -> float | None:
    """Where the estimated-drop rule fires for a champion with this held-out value (None when off or unknown)."""
    policy = config.retraining
    drop = policy.estimated_max_drop if policy.estimated_max_drop is not None else policy.realised_max_drop
    if held_out is None or drop is None:
        return None
    spec = metric_spec(config.model.kind, policy.metric)
    allowed = max(drop, noise)
    change = allowed if spec.bounded else allowed * abs(held_out)
    return held_out - change if spec.higher_is_better else held_out + change


def _cell_text(found: dict | None) -> str:
    """A heat-map cell's hover text: the test, its statistic against the threshold and the verdict (escaped)."""
    if not found:
        return "not reported"
    statistic, threshold = found.get("statistic"), found.get("threshold")
    if not isinstance(statistic, int | float) or not isinstance(threshold, int | float):
        return "no statistic"
    verdict = "drifted" if found.get("drifted") else "not drifted"
    return html.escape(f"{found.get('method')}: {statistic:.4g} against {threshold:.4g} ({verdict})")


def _heat(current: pd.DataFrame, base: str) -> dict:
    """The drift heat map: the most often drifted reported columns by the newest nights, each night linked."""
    nights = current[current["drift_stats"].map(lambda v: isinstance(v, dict) and bool(v))].tail(HEAT_NIGHTS)
    counts: dict[str, list[float]] = {}
    for stats in nights["drift_stats"]:
        for column, found in stats.items():
            tally = counts.setdefault(column, [0, 0.0])
            tally[0] += bool(found.get("drifted"))
            tally[1] = max(tally[1], threshold_ratio(found) or 0.0)
    columns = sorted(counts, key=lambda c: (-counts[c][0], -counts[c][1]))[:HEAT_COLUMNS]
    z, text = [], []
    for column in columns:
        row, words = [], []
        for stats in nights["drift_stats"]:
            found = stats.get(column)
            ratio = threshold_ratio(found) if found else None
            row.append(None if ratio is None else round(min(ratio, 50.0), 4))
            words.append(_cell_text(found))
        z.append(row)
        text.append(words)
    links = {
        r["ds"]: report_route(r["ds"], "drift_overview.html", base)
        for r in nights.to_dict("records")
        if isinstance(r.get("reports"), dict) and not r["reports"].get("expired_at")
    }
    return {
        "columns": [html.escape(c) for c in columns],
        "nights": list(nights["ds"]),
        "z": z,
        "text": text,
        "links": links,
    }


def _number(value: object) -> float | None:
    """A finite number for the chart data (JSON has no NaN), else None."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def version_changes(in_order: list[tuple[str, str]], moves: list, nights: set[str]) -> list[dict]:
    """The nights a new version started scoring (superseded records included: a promotion whose night was then
    rescored after a rollback shows both), each named by the audit log's newest move to that version."""
    events: list[dict] = []
    previous = None
    for ds, version in in_order:
        if previous is not None and version != previous and ds in nights:
            move = next((m for m in reversed(moves) if m.to_version == version), None)
            kind = str(move.action) if move else "version change"
            events.append({"ds": ds, "label": html.escape(f"{kind} v{version}"), "kind": kind})
        previous = version
    return events


def chart_data(
    config: PipelineConfig, current: pd.DataFrame, moves: list, base: str, scored_in_order: list[tuple[str, str]]
) -> dict:
    """What the page's charts draw (JSON): trends, thresholds, alarm lines, markers, and the drift heat map."""
    shown = current.tail(CHART_NIGHTS)
    policy, metric = config.retraining, config.retraining.metric
    spec = metric_spec(config.model.kind, metric)
    cards = _cards(config, list(dict.fromkeys(shown["model_version"].astype(str))))
    records = shown.to_dict("records")
    scored = [r for r in records if r["validation_success"]]
    quarantined = [r for r in records if not r["validation_success"]]
    held = {v: c[0] for v, c in cards.items()}
    noise = {v: c[1] for v, c in cards.items()}
    estimated = [_number(r["estimated"]) for r in scored]
    realised = [_number(r["realised"]) for r in scored]
    intervals = [((r.get("realised_metrics") or {}).get("interval") or {}) for r in scored]
    events = version_changes(scored_in_order, moves, set(shown["ds"]))
    pending = [r for r, real, est in zip(scored, realised, estimated) if real is None and est is not None]
    floor = policy.realised_floor
    return {
        "metric": html.escape(metric),
        "nights": [r["ds"] for r in scored],
        "drift_share": [_number(r["drift_share"]) for r in scored],
        "drift_text": [
            html.escape(f"{len(r['drifted_columns'] or [])} drifted: {_drifted(r['drifted_columns'], 5)}")
            for r in scored
        ],
        "drift_threshold": policy.drift_share_threshold,
        "quarantined": [r["ds"] for r in quarantined],
        "quarantine_text": [html.escape(_status(r)[2][:200]) for r in quarantined],
        "estimated": estimated,
        "band_low": [
            None if e is None else e - noise.get(str(r["model_version"]), 0.0) for e, r in zip(estimated, scored)
        ],
        "band_high": [
            None if e is None else e + noise.get(str(r["model_version"]), 0.0) for e, r in zip(estimated, scored)
        ],
        "realised": realised,
        "realised_plus": [
            None if v is None or i.get("high") is None else max(i["high"] - v, 0.0) for v, i in zip(realised, intervals)
        ],
        "realised_minus": [
            None if v is None or i.get("low") is None else max(v - i["low"], 0.0) for v, i in zip(realised, intervals)
        ],
        "held_out": [held.get(str(r["model_version"])) for r in scored],
        "alarm": [
            _alarm(config, held.get(str(r["model_version"])), noise.get(str(r["model_version"]), 0.0)) for r in scored
        ],
        "floor": floor,
        "floor_label": html.escape(f"realised {spec.bound_word()} {floor:g}") if floor is not None else "",
        "pending": [r["ds"] for r in pending],
        "pending_y": [_number(r["estimated"]) for r in pending],
        "events": events,
        "heat": _heat(current, base),
    }


def _finite(value: object) -> object:
    """The value with every NaN or infinity (JSON has none) replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_for_html(value: object) -> str:
    """JSON that cannot end the <script type="application/json"> block it sits in, whatever the data holds."""
    text = json.dumps(_finite(value), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _state_strip(
    config: PipelineConfig, current: pd.DataFrame, trail: audit.AuditTrail | None, pending: int, dags: dict[str, str]
) -> str:
    """The state first: the champion and since when, pending approvals, the open episode, the last night."""
    cards = []
    if trail is None:
        cards.append('<div class="card bad"><b>Champion</b><br>the audit log fails verification (see below)</div>')
    else:
        move = audit.expected_champion(trail.entries)
        if move is None:
            cards.append('<div class="card"><b>Champion</b><br>none yet</div>')
        else:
            first = current[current["model_version"].astype(str) == move.to_version]["ds"]
            nights = f", scoring since {html.escape(str(first.iloc[0]))}" if len(first) else ""
            cards.append(
                f'<div class="card" id="state-champion"><b>Champion v{html.escape(move.to_version)}</b><br>'
                f"{html.escape(move.action)} {html.escape(move.at[:16].replace('T', ' '))} UTC by "
                f"{html.escape(move.approved_by or '-')}{nights}</div>"
            )
    link = f"/dags/{quote(dags['retrain_model'], safe='')}/required_actions?response_received=false"
    css = "warn" if pending else ""
    cards.append(
        f'<div class="card {css}" id="state-approvals"><b>Approvals pending: {pending}</b><br>'
        + (f'<a href="{html.escape(link)}">answer in Airflow</a>' if pending else "nothing to answer")
        + "</div>"
    )
    episode = episodes.open_episode(config)
    if episode is None:
        cards.append('<div class="card ok" id="state-episode"><b>No open episode</b><br>no rule is firing</div>')
    else:
        css = "bad" if episode.state == EpisodeState.BACKOFF else "warn"
        cards.append(
            f'<div class="card {css}" id="state-episode"><b><a href="#episode-{episode.id}">Episode {episode.id}</a>: '
            f"{html.escape(episode.state)}</b><br>since {html.escape(episode.opened_ds)} "
            f"({html.escape(', '.join(episode.rules))})<br><small>{html.escape(episode.outcome[:200])}</small></div>"
        )
    if current.empty:
        cards.append('<div class="card"><b>Last night</b><br>none monitored yet</div>')
    else:
        last = current.iloc[-1].to_dict()
        state, css, _ = _status(last)
        run = last.get("airflow_run_id")
        anchor = f' <a href="{html.escape(airflow_run(dags["batch_scoring"], run))}">run</a>' if run else ""
        cards.append(
            f'<div class="card {css}" id="state-night"><b>Last night {html.escape(last["ds"])}</b><br>'
            f"v{html.escape(str(last['model_version']))}: {state}, decision {html.escape(last.get('decision') or '-')}"
            f"{anchor}</div>"
        )
    return f'<div id="state">{"".join(cards)}</div>'


PAGE_STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}.bad{background:#fdd}.ok{background:#dfd}
.warn{background:#ffe9b3}#state{display:flex;gap:10px;flex-wrap:wrap;margin:0 0 1em}
.card{border:1px solid #bbb;border-radius:6px;padding:8px 12px;min-width:220px;font-size:14px}
th.sortable{cursor:pointer}th[aria-sort=descending]::after{content:" ▼"}th[aria-sort=ascending]::after{content:" ▲"}
.result{font-size:12px}small{color:#333}details{font-size:12px}.chart{width:100%;max-width:1300px}"""


def render_page(
    config: PipelineConfig, base: str, overview: str | None = None, suffix: str = "", pending: int = 0
) -> str:
    """Return the monitoring page: the state strip, interactive charts, then one row per night (newest first).

    `overview`: the address of the overview of all models (in a deployment of many models). `suffix`: the model's
    DAG id suffix (`__<key>`, empty for a single model). `pending`: its open approval requests.
    """
    dags = {name: f"{name}{suffix}" for name in ("batch_scoring", "retrain_model")}
    back = f'<p><a href="{html.escape(overview)}">all models</a></p>' if overview else ""
    frame = history.read_history(config)
    frame["estimated"], frame["realised"] = metric_columns(config, frame)
    ordered = scoring_order(frame) if len(frame) else frame
    current, older = latest_records(ordered)
    trail: audit.AuditTrail | None = None
    broken: AuditIntegrityError | None = None
    try:
        trail = audit.read_trail(config)  # read and verified once for the strip, the charts and the tables
    except AuditIntegrityError as exc:
        broken = exc
    moves = [e for e in trail.entries if e.action in MOVES] if trail else []
    scored = ordered[ordered["validation_success"].fillna(False).astype(bool)] if len(ordered) else ordered
    in_order = list(zip(scored["ds"], scored["model_version"].astype(str)))
    metric = html.escape(config.retraining.metric)
    newest = current.iloc[::-1].head(TABLE_NIGHTS).to_dict("records")
    rows = "".join(_night_row(r, older.get(r["ds"], []), base, dags) for r in newest)
    more = (
        f"<p>The {TABLE_NIGHTS} newest of {len(current)} nights are listed.</p>" if len(current) > TABLE_NIGHTS else ""
    )
    charts = ""
    if len(current):
        charts = (
            f'<script type="application/json" id="chart-data">{_json_for_html(chart_data(config, current, moves, base, in_order))}'
            '</script><div class="chart" id="chart-drift"></div><div class="chart" id="chart-metric"></div>'
            '<h2>Drift by column</h2><div class="chart" id="chart-heatmap"></div>'
        )
    scripts = (
        f'<script src="{base}/_static/{plotly_name()}"></script><script src="{base}/_static/{PAGE_SCRIPT}"></script>'
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model monitoring</title>
<style>{PAGE_STYLE}</style></head><body>{back}<h1>Model monitoring: {html.escape(config.model.registered_name)}
<small>({html.escape(str(config.model.kind))}{", external" if config.model.external else ""})</small></h1>
{_state_strip(config, current, trail, pending, dags)}{charts}
<h2>Nights (newest first)</h2>
<p><label>Filter <input id="night-filter" type="search" placeholder="a date, a column, a reason"></label>
<label>Show <select id="night-status"><option value="">all nights</option><option value="quarantined">quarantined</option>
<option value="warned">with warnings</option><option value="retrain">retraining rules fired</option></select></label>
Click a column header to sort.</p>
<table id="nights"><thead><tr><th>night</th><th>model</th><th>validation</th><th>drift share</th>
<th>estimated {metric}</th><th>realised {metric} [95%]</th><th>labels</th><th>decision and request</th><th>seconds</th>
<th>reports</th></tr></thead>
<tbody>{rows or "<tr><td colspan=10>No night has been monitored yet.</td></tr>"}</tbody></table>{more}
{_segment_section(config, frame)}
<h2>Episodes (newest first)</h2>
<p>One episode per problem: its first night alerts and it requests retraining once, when a run can train.
{_rejected_count(config, trail)}</p>
<table id="episodes"><thead><tr><th>episode</th><th>state</th><th>opened</th><th>drift onset</th><th>rules</th><th>reasons</th>
<th>requests</th><th>reminders</th><th>candidates</th><th>outcome</th></tr></thead>
<tbody>{_episode_rows(config) or "<tr><td colspan=10>No episode yet.</td></tr>"}</tbody></table>
<h2>Champion history (audit log, newest first)</h2>
<table id="champions"><thead><tr><th>when (UTC)</th><th>action</th><th>from</th><th>to</th><th>by</th><th>reason</th><th>gate</th>
<th>Airflow run</th></tr></thead><tbody>{_audit_rows(trail, broken, base) or "<tr><td colspan=8>No alias has moved yet.</td></tr>"}</tbody></table>
{scripts}</body></html>"""


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


def _rejected_count(config: PipelineConfig, trail: audit.AuditTrail | None) -> str:
    """How many candidates were rejected (audit log), and how many of them retention has cleaned."""
    if trail is None:  # the log does not verify: the audit table says why
        return ""
    rejected = {e.to_version for e in trail.entries if e.action == AuditAction.REJECT}
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


def _audit_rows(trail: audit.AuditTrail | None, broken: AuditIntegrityError | None, base: str) -> str:
    if trail is None:
        return f"<tr><td colspan=8 class=bad>{html.escape(str(broken))}</td></tr>"
    entries = trail.entries
    rows = [f"<tr><td colspan=8 class=bad>{html.escape(w)}</td></tr>" for w in trail.warnings]
    for e in reversed(entries):
        cell = "-"
        if e.gate is not None and e.gate.comparison is not None and e.gate.pair:
            c, pair = e.gate.comparison, e.gate.pair
            cell = (
                f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] "
                f'<a href="{comparison_route(pair, GATE_PAGE, base)}">gate page</a> '
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


@dataclass(frozen=True)
class ModelOverview:
    """One model's state at a glance, as the overview page and the demo's closing table show it."""

    champion: str  # "v3", "-" (none yet) or why it cannot be told
    promotions: int
    rejections: int
    last_night: str | None = None  # None: no night monitored yet
    status: str = "no night yet"
    decision: str | None = None
    drift_share: float | None = None
    estimated: float | None = None  # the last night's estimate of retraining.metric
    realised: float | None = None  # the newest realised value of retraining.metric
    warnings: int = 0


def model_overview(config: PipelineConfig) -> ModelOverview:
    """The champion by the audit log, its moves, and the newest night (a rescoring's record when it has one)."""
    try:
        entries = audit.read_audit(config)
        last_move = audit.expected_champion(entries)
        champion = f"v{last_move.to_version}" if last_move else "-"
    except AuditIntegrityError:
        entries, champion = [], "audit log fails verification"
    promotions = sum(e.action == AuditAction.PROMOTE for e in entries)
    rejections = sum(e.action == AuditAction.REJECT for e in entries)
    frame = history.read_history(config)
    if frame.empty:
        return ModelOverview(champion, promotions, rejections)
    estimated, realised = metric_columns(config, frame)
    last = frame.sort_values(["ds", "updated_at"]).iloc[-1]  # the night's newest record (a rescoring's)
    if not last["validation_success"]:
        status = "quarantined"
    elif last["decision"] == "retrain":
        status = "retrain requested"
    else:
        status = str(last["decision"] or "monitored")
    newest_realised = realised.dropna()
    return ModelOverview(
        champion,
        promotions,
        rejections,
        last_night=str(last["ds"]),
        status=status,
        decision=last["decision"] or None,
        drift_share=_number(last["drift_share"]),
        estimated=_number(estimated.to_dict().get(last.name)),
        realised=_number(newest_realised.iloc[-1]) if len(newest_realised) else None,
        warnings=len(last["validation_warnings"] or []),
    )


_STATUS_CSS = {"quarantined": "bad", "retrain requested": "warn"}


def _overview_row(config: PipelineConfig, link: str, approvals: int) -> str:
    facts = model_overview(config)
    name = f'<a href="{html.escape(link)}">{html.escape(config.model.registered_name)}</a>'
    kind = html.escape(str(config.model.kind) + (" (external)" if config.model.external else ""))
    metric = html.escape(config.retraining.metric)
    champion = html.escape(facts.champion)
    if facts.last_night is None:
        cells = "<td>-</td><td>no night yet</td><td>-</td>" + f"<td>{metric}</td><td>-</td><td>-</td><td>-</td>"
        return f"<tr><td>{name}</td><td>{kind}</td><td>{champion}</td>{cells}<td>{approvals}</td></tr>"
    css = _STATUS_CSS.get(facts.status, "ok")
    return (
        f"<tr><td>{name}</td><td>{kind}</td><td>{champion}</td><td>{html.escape(facts.last_night)}</td>"
        f"<td class={css}>{html.escape(facts.status)}</td><td>{_fmt(facts.drift_share, '{:.2f}')}</td>"
        f"<td>{metric}</td><td>{_fmt(facts.estimated)}</td><td>{_fmt(facts.realised)}</td>"
        f"<td>{facts.warnings}</td><td>{approvals}</td></tr>"
    )
