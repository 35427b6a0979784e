"""The gate's side-by-side page: both models on the same evaluation days, each metric's difference and direction.

Static HTML without script (served sandboxed like every report); every value from the data or the config is
escaped. Written beside the Evidently performance pages of the comparison (`reports/models/v<c>_vs_v<p>/gate.html`).
"""

from __future__ import annotations

import html
import math

from pipelines.core.contracts import CI_LEVEL, GateResult
from pipelines.core.kinds import METRICS, Kind

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;font-size:14px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{background:#dfd}.worse{background:#fdd}.verdict{font-size:18px;padding:8px 12px;border-radius:6px;display:inline-block}
.pass{background:#dfd}.fail{background:#fdd}small{color:#444}"""


def _days(days: list[str]) -> str:
    if not days:
        return "-"
    return f"{days[0]} to {days[-1]} ({len(days)} partition{'s' if len(days) != 1 else ''})"


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def gate_page(
    gate: GateResult,
    kind: Kind | str,
    primary: str,
    windows: dict[str, list[str]],
    links: dict[str, str],
    answer: str | None = None,
) -> str:
    """Return the page: verdict, the primary metric's difference with its interval, every metric side by side with
    its direction, evaluation days, both training windows, segment concerns and the Evidently pages (`links`);
    `answer`: what was decided after the gate (the approval's answer and who gave it), once it is known."""
    e = html.escape
    metrics = METRICS[Kind(kind)]
    candidate, champion = gate.metrics.get("candidate", {}), gate.metrics.get("champion", {})
    rows = []
    for name in candidate:
        spec = metrics.get(name)
        direction = "higher is better" if spec is None or spec.higher_is_better else "lower is better"
        c, p = candidate.get(name), champion.get(name)
        cell, css = "-", ""
        if isinstance(c, int | float) and isinstance(p, int | float) and math.isfinite(c) and math.isfinite(p):
            gain = spec.improvement(c, p) if spec else c - p
            css = "better" if gain > 0 else "worse" if gain < 0 else ""
            cell = f"{c - p:+.4f} ({'better' if gain > 0 else 'worse' if gain < 0 else 'equal'})"
        marker = " <b>(the gate's metric)</b>" if name == primary else ""
        rows.append(
            f"<tr><td>{e(name)}{marker}</td><td>{e(direction)}</td><td class=num>{_number(c)}</td>"
            f"<td class=num>{_number(p)}</td><td class='num {css}'>{e(cell)}</td></tr>"
        )
    verdict = "passed" if gate.passed else "failed"
    reasons = "".join(f"<li>{e(r)}</li>" for r in gate.reasons) or "<li>every rule of the gate holds</li>"
    concerns = "".join(f"<li>{e(c)}</li>" for c in gate.concerns)
    comparison = gate.comparison
    difference = (
        f"<p>Difference on {e(primary)} (candidate minus champion): <b>{comparison.difference:+.4f}</b>, "
        f"{CI_LEVEL:.0%} paired bootstrap interval [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] "
        f"({comparison.samples} resamples of the same rows for both models).</p>"
        if comparison
        else ""
    )
    segments = ""
    if gate.segments:
        segment_rows = "".join(
            f"<tr><td>{e(str(s.get('segment', '')))}</td><td class=num>{e(str(s.get('rows', '')))}</td>"
            f"<td class=num>{_number(s.get('share'))}</td><td class=num>{_number(s.get('difference'))} "
            f"[{_number(s.get('ci_low'))}, {_number(s.get('ci_high'))}]</td></tr>"
            for s in gate.segments[:30]
        )
        segments = (
            f"<h2>Per segment (candidate minus champion on {e(primary)})</h2><table><tr><th>segment</th><th>rows</th>"
            f"<th>share</th><th>difference [{CI_LEVEL:.0%}]</th></tr>{segment_rows}</table>"
        )
    evidently = " · ".join(f'<a href="{e(href)}">{e(label)}</a>' for label, href in links.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Gate: v{e(gate.candidate)} against v{e(str(gate.champion))}</title>
<style>{STYLE}</style></head><body>
<h1>Gate: candidate v{e(gate.candidate)} against champion v{e(str(gate.champion))}</h1>
<p class="verdict {"pass" if gate.passed else "fail"}">The gate {verdict}</p>
<p id="answer"><b>Decision:</b> {e(answer) if answer else "waiting for the approval step, or not decided yet"}</p>
<ul>{reasons}</ul>{f"<p><b>Segment concerns</b> (a person decides):</p><ul>{concerns}</ul>" if concerns else ""}
{difference}
<table><tr><th></th><th>candidate v{e(gate.candidate)}</th><th>champion v{e(str(gate.champion))}</th></tr>
<tr><td>trained on</td><td>{e(_days(windows.get("candidate", [])))}</td><td>{e(_days(windows.get("champion", [])))}</td></tr>
<tr><td>evaluated on (labelled days neither trained on)</td><td colspan=2>{e(_days(gate.evaluation_days))}</td></tr></table>
<h2>Every metric on the evaluation days</h2>
<table><tr><th>metric</th><th>direction</th><th>candidate v{e(gate.candidate)}</th><th>champion v{e(str(gate.champion))}</th>
<th>difference</th></tr>{"".join(rows)}</table>
{segments}
<p>Evidently's performance pages of the same rows: {evidently}</p>
</body></html>"""
