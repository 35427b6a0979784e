"""Writing Evidently reports: the one place Evidently is imported, and HTML whose data can never act."""

from __future__ import annotations

import html
import importlib
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from pipelines.core.contracts import ValidatedPartition
from pipelines.storage.atomic import write_atomic


def evidently(submodule: str = "") -> ModuleType:
    """Import Evidently (or one of its submodules) with its usage telemetry off; it is imported nowhere else."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # read by Evidently when it is first imported
    return importlib.import_module(f"evidently.{submodule}" if submodule else "evidently")


# Evidently's standalone HTML puts the report data in two one-line JSON assignments inside a <script>
# (JSON escapes newlines and, with ensure_ascii, every non-ASCII character, so each stays on one line).
_DATA_LINE = re.compile(r"^\s*var (?:additional_graphs_)?metric_[0-9a-f]{32} = .*;\s*$")


def inert_report_html(page: str) -> str:
    """Return Evidently's HTML with its embedded data unable to end the <script> it sits in.

    A data value such as `</script><img onerror=...>` would otherwise close the script block and run as
    markup. Inside the JSON, `<`, `>` and `&` become the equivalent escapes \\u003c, \\u003e and \\u0026
    (outside strings JSON holds none of them), so the values read the same and can never act.
    """
    lines = page.split("\n")
    data_lines = [i for i, line in enumerate(lines) if _DATA_LINE.match(line)]
    if len(data_lines) != 2:
        raise RuntimeError(
            f"Evidently's HTML template changed: expected 2 embedded data lines, found {len(data_lines)}"
        )
    for i in data_lines:
        lines[i] = lines[i].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return "\n".join(lines)


# Each Evidently page would carry its own copy of the chart library (3.5 MB): the pages load one shared copy from
# `_lib/` beside their folders instead (written there once; the monitoring plugin serves the installed one).
LIB_FOLDER = "_lib"


def _lib_file() -> Path:
    return Path(evidently().__path__[0]) / "nbextension" / "static" / "index.js"


def evidently_lib_name() -> str:
    """The shared chart library's file name, versioned: a page always loads the library it was written for."""
    return f"evidently-{evidently().__version__}.js"


def evidently_lib() -> bytes:
    """The installed Evidently's chart library, the script every report page loads."""
    return _lib_file().read_bytes()


def shared_lib_html(page: str) -> str:
    """Return Evidently's standalone HTML with its inline chart library replaced by a script loading the shared copy
    (`../_lib/evidently-<version>.js`, relative to the report's folder)."""
    inline = f"<script>{_lib_file().read_text(encoding='utf-8')}</script>"
    if page.count(inline) != 1:
        raise RuntimeError("Evidently's HTML template changed: its inline chart library was not found once")
    return page.replace(inline, f'<script src="../{LIB_FOLDER}/{evidently_lib_name()}"></script>')


def write_shared_lib(reports_root: Path) -> None:
    """Write the chart library once under `reports_root/_lib/` (pages opened from the disk load it from there)."""
    target = reports_root / LIB_FOLDER / evidently_lib_name()
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, lambda temp: temp.write_bytes(evidently_lib()))


def save_snapshot(snapshot: Any, folder: Path, stem: str) -> dict[str, str]:
    """Save a snapshot as HTML (data made inert, see `inert_report_html`; the chart library shared, see
    `shared_lib_html`) and JSON atomically; return their paths."""
    paths = {}
    write_shared_lib(folder.parent)
    writers = (
        (
            "html",
            lambda temp: temp.write_text(
                inert_report_html(shared_lib_html(snapshot.get_html_str(as_iframe=False))), encoding="utf-8"
            ),
        ),
        ("json", lambda temp: snapshot.save_json(str(temp))),
    )
    for suffix, write in writers:
        target = folder / f"{stem}.{suffix}"
        write_atomic(target, write)
        paths[f"{stem}_{suffix}"] = str(target)
    return paths


def validation_page(validated: ValidatedPartition) -> str:
    """Return the night's data-quality findings as a small HTML page (every value escaped)."""
    ds = html.escape(validated.ds)
    items = "".join(f"<li>{html.escape(w)}</li>" for w in validated.warnings)
    body = f"<ul>{items}</ul>" if items else "<p>Every check passed.</p>"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>Validation {ds}</title></head>'
        f'<body style="font-family:sans-serif"><h1>Validation of ds={ds}</h1>'
        f"<p>{validated.rows:,} rows, {validated.expectations} expectations. Data-quality warnings "
        "(checks set to <code>warn</code> in validation.severity, or a night an operator accepted): the night was scored, "
        f"and the warned columns count as drifted in the drift share.</p>{body}</body></html>"
    )
