"""The monitoring plugin's URL scheme: one place for the routes the plugin serves and the links that point at them."""

from __future__ import annotations

from pipelines.core.paths import QUARANTINE, QUARANTINE_RECORD, REPORTS

MONITORING_PREFIX = "/monitoring"  # where the plugin's app is mounted on the Airflow api-server
REPORT_FILES = (
    "drift_overview.html",
    "drift.html",
    "data_summary.html",
    "performance.html",
    "validation.html",
    "drift.json",
    "data_summary.json",
    "performance.json",
    "summary.json",
    "drift_columns.json",
)  # what reports/ds=.../ may serve
NIGHT_PAGES = (
    "drift_overview.html",
    "drift.html",
    "data_summary.html",
    "performance.html",
    "validation.html",
)  # linked per night
GATE_PAGE = "gate.html"  # the gate's side-by-side page of a comparison (pipelines.steps.gate_page)
MODEL_FILES = (GATE_PAGE, "candidate.html", "champion.html", "candidate.json", "champion.json", "comparison.json")


def report_route(ds: str, name: str, base: str = MONITORING_PREFIX) -> str:
    """Return the path of a night's report file under the plugin (`<base>/reports/ds=<ds>/<name>`)."""
    return f"{base}/{REPORTS}/ds={ds}/{name}"


def quarantine_route(ds: str, base: str = MONITORING_PREFIX) -> str:
    """Return the path of a quarantined night's record under the plugin (`<base>/quarantine/ds=<ds>/validation.json`)."""
    return f"{base}/{QUARANTINE}/ds={ds}/{QUARANTINE_RECORD}"


def comparison_route(pair: str, name: str, base: str = MONITORING_PREFIX) -> str:
    """Return the path of a gate comparison file under the plugin (`<base>/models/<pair>/<name>`)."""
    return f"{base}/models/{pair}/{name}"


def model_base(page_key: str) -> str:
    """Where a model's monitoring page and reports are: the plugin's root, or `/model/<key>` for one of many."""
    return f"{MONITORING_PREFIX}/model/{page_key}" if page_key else MONITORING_PREFIX
