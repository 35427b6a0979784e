"""The night's drift overview and each column's page, rendered from the stored statistics (`drift_columns.json`).

Plain HTML and inline SVG, every value escaped, no script: they work under the reports' sandbox policy and stay small
at any width (the overview is one table row per column; a column's page is rendered when someone opens it).
"""

from __future__ import annotations

import html
from typing import Any

COLUMN_PAGES = "columns"  # a column's page: <night folder>/columns/<position in the ranking>.html
STYLE = (
    "body{font-family:sans-serif;margin:1.2em;color:#222}table{border-collapse:collapse;font-size:13px}"
    "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}td:first-child,th:first-child,"
    "td.name,th.name{text-align:left}tr.drifted td{background:#fde8e8}.muted{color:#777}"
    "svg text{font-size:11px;fill:#333}"
)


def _num(value: Any, spec: str = "{:.4g}") -> str:
    return "-" if value is None else html.escape(spec.format(value))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _verdict(found: dict[str, Any], fdr: float) -> str:
    if found.get("drifted"):
        return "drifted"
    if found.get("past_threshold"):  # set with the verdict (`drift.judge_columns`)
        return f"past threshold, within noise (q &gt; {fdr:g})"
    return "-"


def _moment(found: dict[str, Any], side: str, name: str) -> Any:
    return ((found.get("profile") or {}).get("moments") or {}).get(side, {}).get(name)


def overview_page(stored: dict[str, Any]) -> str:
    """The night's drift overview: the counts, then every column ranked (drifted first) with its statistic,
    threshold, noise p-value and q-value, null shares and means, each linking to its page."""
    columns, fdr = stored["columns"], stored["fdr"]
    features = [c for c in stored["ranked"] if not columns[c].get("output")]
    drifted = [c for c in features if columns[c].get("drifted")]
    outputs = [c for c in stored["ranked"] if columns[c].get("output")]
    rows = []
    for position, name in enumerate(stored["ranked"]):
        found = columns[name]
        numeric = "edges" in (found.get("profile") or {})
        centre = "mean" if numeric else "distinct"
        rows.append(
            f'<tr class="{"drifted" if found.get("drifted") else ""}"><td>{position + 1}</td>'
            f'<td class="name"><a href="{COLUMN_PAGES}/{position}.html">{html.escape(name)}</a>'
            f"{' (model output)' if found.get('output') else ''}</td>"
            f"<td>{html.escape(found['method'])}</td><td>{_num(found.get('statistic'))}</td>"
            f"<td>{'&lt; ' if found['kind'] == 'p_value' else '&ge; '}{_num(found['threshold'])}</td>"
            f"<td>{_num(found.get('p_noise'), '{:.2g}')}</td><td>{_num(found.get('q_value'), '{:.2g}')}</td>"
            f"<td>{_verdict(found, fdr)}</td>"
            f"<td>{_num(_moment(found, 'current', 'null_share'), '{:.1%}')} / "
            f"{_num(_moment(found, 'reference', 'null_share'), '{:.1%}')}</td>"
            f"<td>{centre}: {_num(_moment(found, 'current', centre))} / {_num(_moment(found, 'reference', centre))}</td>"
            "</tr>"
        )
    ds = html.escape(stored.get("ds") or "")
    summary = (
        f"<h1>Drift of ds={ds}</h1>"
        f"<p><b>{len(drifted)} of {len(features)} feature columns drifted</b>"
        f"{': ' + html.escape(', '.join(drifted[:30])) + (' ...' if len(drifted) > 30 else '') if drifted else ''}."
        f" Model outputs drifted: {html.escape(', '.join(c for c in outputs if columns[c].get('drifted')) or 'none')}.</p>"
        f"<p class=muted>{stored['sample_rows']:,} sampled rows of the night against {stored['reference_rows']:,} rows "
        "of the champion's reference. A column drifts when its statistic is past its threshold (a distance at or "
        "above it, a p-value below it) <i>and</i> its noise p-value (how often a night without drift goes this far, "
        f"from the draws measured when the model was registered) survives a false discovery rate of {fdr:g} across "
        "the feature columns (its q-value at most that). Columns are ranked drifted first, then by noise p-value. "
        'Evidently\'s report (<a href="drift.html">drift.html</a>, <a href="data_summary.html">data summary</a>) '
        f"renders the top {len(stored.get('reported', []))} of them; its per-column verdict compares with the "
        "threshold only.</p>"
    )
    table = (
        "<table><thead><tr><th>#</th><th class=name>column</th><th>method</th><th>statistic</th><th>threshold</th>"
        "<th>noise p</th><th>q-value</th><th>verdict</th><th>nulls night / ref</th><th>night / ref</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _page(f"Drift {stored.get('ds') or ''}", summary + table)


def _bars(labels: list[str], reference: list[float | None], current: list[float | None]) -> str:
    """A grouped bar chart of the two samples' shares per bin or category, as inline SVG."""
    width, height, left, bottom = 760, 260, 40, 70
    top = max([v or 0.0 for v in [*reference, *current]] + [1e-9])
    slot = (width - left) / max(len(labels), 1)
    bars, ticks = [], []
    for i, label in enumerate(labels):
        for k, (values, colour) in enumerate(((reference, "#9bb7d4"), (current, "#d9534f"))):
            share = values[i] or 0.0
            h = (height - bottom - 10) * share / top
            x = left + i * slot + k * slot * 0.42 + slot * 0.08
            bars.append(
                f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{slot * 0.4:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.escape(label)}: {share:.2%}</title></rect>'
            )
        ticks.append(
            f'<text transform="translate({left + (i + 0.5) * slot:.1f},{height - bottom + 12}) rotate(40)">'
            f"{html.escape(label[:18])}</text>"
        )
    legend = (
        f'<rect x="{left}" y="2" width="10" height="10" fill="#9bb7d4"/><text x="{left + 14}" y="11">reference</text>'
        f'<rect x="{left + 90}" y="2" width="10" height="10" fill="#d9534f"/><text x="{left + 104}" y="11">night</text>'
        f'<text x="2" y="{height - bottom}">0</text><text x="2" y="20">{top:.0%}</text>'
    )
    return f'<svg width="{width}" height="{height}" role="img">{legend}{"".join(bars)}{"".join(ticks)}</svg>'


def column_page(stored: dict[str, Any], position: int) -> str | None:
    """A column's page: its test and verdict, both samples' shares (bins or categories) and moments; None when
    there is no such position in the ranking."""
    if not 0 <= position < len(stored["ranked"]):
        return None
    name = stored["ranked"][position]
    found = stored["columns"][name]
    profile = found.get("profile") or {}
    if "edges" in profile:
        edges = profile["edges"]
        labels = (
            [f"< {edges[0]:.4g}"]
            + [f"{a:.4g} to {b:.4g}" for a, b in zip(edges[:-1], edges[1:], strict=False)]
            + [f">= {edges[-1]:.4g}"]
            if edges
            else ["all values"]
        )
    else:
        labels = [*profile.get("categories", []), "(all others)"]
    shares = profile.get("shares", {})
    chart = _bars(labels, shares.get("reference", []), shares.get("current", [])) if labels else ""
    moments = profile.get("moments", {})
    names = sorted({k for side in moments.values() for k in side})
    table = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_num(moments.get('current', {}).get(k))}</td>"
        f"<td>{_num(moments.get('reference', {}).get(k))}</td></tr>"
        for k in names
    )
    ds = html.escape(stored.get("ds") or "")
    body = (
        f'<p><a href="../drift_overview.html">&larr; all columns of ds={ds}</a></p>'
        f"<h1>{html.escape(name)}</h1>"
        f"<p>{html.escape(found['method'])} statistic {_num(found.get('statistic'))}, threshold "
        f"{'&lt; ' if found['kind'] == 'p_value' else '&ge; '}{_num(found['threshold'])}; noise p-value "
        f"{_num(found.get('p_noise'), '{:.2g}')}, q-value {_num(found.get('q_value'), '{:.2g}')}: "
        f"<b>{_verdict(found, stored['fdr'])}</b> (rank {position + 1} of {len(stored['ranked'])}).</p>"
        f"<h2>Shares of each sample</h2>{chart}"
        f"<h2>Statistics</h2><table><tr><th class=name></th><th>night</th><th>reference</th></tr>{table}</table>"
    )
    return _page(f"{name} on {stored.get('ds') or ''}", body)
