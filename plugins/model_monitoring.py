"""Airflow plugin: the "Model monitoring" page and the Evidently reports, behind the Airflow login; and
batch_scoring's timetable, which Airflow accepts only from a plugin."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from pipelines.core.errors import ReportStoreError
from pipelines.storage.urls import GATE_PAGE, MONITORING_PREFIX, comparison_route, model_base, report_route
from pipelines.surfaces.airflow_adapter import NightTimetable

# Reports are built from data that outsiders can influence. Served under the Airflow site, a report runs
# in a sandbox: an opaque origin (no Airflow cookie, no same-origin requests), no network (connect-src),
# no forms, no plugins; only the inline script, styles, data images and fonts Evidently's page needs.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; "
        "base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# the shared chart library: loadable by the sandboxed (opaque-origin) reports, never rendered as a page
LIB_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "public, max-age=3600",
}
DATA_HEADERS = REPORT_HEADERS | {"Content-Security-Policy": "sandbox; default-src 'none'"}
# The page runs only the plugin's own files (its script and plotly.js, from this host): no inline script, no eval.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; img-src data:; style-src 'unsafe-inline'; connect-src 'none'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class LoginRequired(Exception):
    """Raised by the auth dependency; answered with a redirect to the Airflow login page."""


async def require_airflow_login(request: Request) -> object:
    """Accept the same credentials as the Airflow UI (its JWT cookie or a bearer token) and nothing else."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    try:
        user = await resolve_user_from_token(token)
    except HTTPException as exc:
        raise LoginRequired() from exc
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="this user may not view the Airflow UI")
    return user


METRICS_CONN_ID = "monitoring_metrics"  # an Airflow connection whose password is Prometheus's read-only token


def metrics_token() -> str | None:
    """The read-only scrape token: the password of the Airflow connection `monitoring_metrics` (None when unset).

    Kept in Airflow's connections (an AIRFLOW_CONN_MONITORING_METRICS variable, a secrets backend or the metadata
    DB), never in the pipeline's YAML.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(METRICS_CONN_ID).password or None
    except AirflowNotFoundException:
        return None


async def require_login_or_metrics_token(request: Request) -> object:
    """The Airflow login, or the scrape token as a bearer token (it opens /metrics and nothing else)."""
    import hmac

    header = request.headers.get("authorization", "")
    offered = header[7:] if header.lower().startswith("bearer ") else ""
    expected = metrics_token() if offered else None
    if expected and hmac.compare_digest(offered.encode(), expected.encode()):
        return "metrics token"
    return await require_airflow_login(request)


def _sources():
    from pipelines.core.config import model_sources

    return model_sources()


def _config():
    """The config of a single-model deployment (the page at `/`)."""
    sources = _sources()
    if len(sources) != 1 or sources[0].suffix or sources[0].config is None:
        raise HTTPException(status_code=404, detail="this deployment holds several models: open one from the overview")
    return sources[0].config


def _model_source(key: str):
    """The model `key` (its file's stem) with a valid config: looked up among the deployment's models, never a path."""
    for source in _sources():
        if source.suffix == f"__{key}" and source.config is not None:
            return source
    raise HTTPException(status_code=404, detail="no such model")


def _model_config(key: str):
    return _model_source(key).config


def _pending_approvals() -> dict[str, int]:
    """Open approval requests per DAG id (Airflow's human-in-the-loop table); {} when it cannot be read."""
    try:
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import func, select

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.dag_id, func.count())
                .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
                .where(HITLDetail.responded_at.is_(None), TaskInstance.state == "deferred")
                .group_by(TaskInstance.dag_id)
            ).all()
        return {dag_id: int(count) for dag_id, count in rows}
    except Exception:  # noqa: BLE001  (the overview still renders without the counts, whatever the cause)
        return {}


app = FastAPI(title="Model monitoring", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, _: LoginRequired):
    from airflow.api_fastapi.app import get_auth_manager

    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return HTMLResponse("Not authenticated: log in to Airflow first", status_code=401)


@app.exception_handler(ReportStoreError)
async def _store_error(request: Request, exc: ReportStoreError):
    """A report store that cannot be read, or a manifest it refuses: 502 with the reason (as text, never HTML)."""
    return PlainTextResponse(f"the report could not be served: {exc}", status_code=502, headers=DATA_HEADERS)


@app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_airflow_login)])
def monitoring_page(request: Request) -> HTMLResponse:
    from pipelines.surfaces.monitoring_page import render_overview, render_page

    sources = _sources()
    if len(sources) == 1 and not sources[0].suffix and sources[0].config is not None:
        pending = _pending_approvals().get(sources[0].dag_id("retrain_model"), 0)
        page = render_page(sources[0].config, base=MONITORING_PREFIX, pending=pending)
        return HTMLResponse(page, headers=PAGE_HEADERS)
    return HTMLResponse(render_overview(sources, MONITORING_PREFIX, _pending_approvals()), headers=PAGE_HEADERS)


@app.get("/metrics", dependencies=[Depends(require_login_or_metrics_token)])
def metrics() -> Response:
    """OpenMetrics text of every model of the deployment, for Prometheus (see docs/operations.md "Metrics")."""
    from pipelines.surfaces.metrics import CONTENT_TYPE, render_metrics

    return Response(render_metrics(_sources(), _pending_approvals()), media_type=CONTENT_TYPE, headers=DATA_HEADERS)


@app.get("/model/{key}/", response_class=HTMLResponse, dependencies=[Depends(require_airflow_login)])
def model_page(key: str) -> HTMLResponse:
    from pipelines.surfaces.monitoring_page import render_page

    source = _model_source(key)
    page = render_page(
        source.config,
        base=model_base(key),
        overview=f"{MONITORING_PREFIX}/",
        suffix=source.suffix,
        pending=_pending_approvals().get(source.dag_id("retrain_model"), 0),
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)


@app.get("/{prefix:path}/_static/{name}")
@app.get("/_static/{name}")
def static_file(name: str, prefix: str = "") -> Response:
    """The page's script and the chart library (plotly.js from the installed plotly package): the same open-source
    files for everyone, served from this host so the page's policy can allow them as 'self'."""
    from pipelines.surfaces.monitoring_page import static_asset

    content = static_asset(name)
    if content is None:
        raise HTTPException(status_code=404, detail="no such file")
    return Response(content, media_type="text/javascript", headers=STATIC_HEADERS)


@app.get("/model/{key}/quarantine/{partition}/validation.json", dependencies=[Depends(require_airflow_login)])
def model_quarantine_record(key: str, partition: str) -> Response:
    return _quarantine_record(_model_config(key), partition)


@app.get("/quarantine/{partition}/validation.json", dependencies=[Depends(require_airflow_login)])
def quarantine_record(partition: str) -> Response:
    return _quarantine_record(_config(), partition)


def _quarantine_record(config, partition: str) -> Response:
    """Why a night was quarantined (its record as validation wrote it), served as data, never as a page."""
    from pipelines.surfaces.monitoring_page import read_quarantine_record

    content = read_quarantine_record(config, partition)
    if content is None:
        raise HTTPException(status_code=404, detail="no quarantine record for this night")
    return Response(content, media_type="application/json", headers=DATA_HEADERS)


@app.get("/{prefix:path}/_lib/{name}")
def evidently_lib(prefix: str, name: str) -> Response:
    """The chart library every Evidently report loads (`../_lib/` from its folder): the installed Evidently's own
    open-source bundle, the same for everyone, so served without login (a sandboxed report sends no cookie)."""
    from pipelines.steps.reports import evidently_lib, evidently_lib_name

    if name != evidently_lib_name():
        raise HTTPException(status_code=404, detail="no such library")
    return Response(evidently_lib(), media_type="text/javascript", headers=LIB_HEADERS)


@app.get("/model/{key}/reports/{partition}/columns/{position}.html", dependencies=[Depends(require_airflow_login)])
def model_column_page(key: str, partition: str, position: int) -> Response:
    return _column_page(_model_config(key), partition, position)


@app.get("/reports/{partition}/columns/{position}.html", dependencies=[Depends(require_airflow_login)])
def column_page(partition: str, position: int) -> Response:
    return _column_page(_config(), partition, position)


def _column_page(config, partition: str, position: int) -> Response:
    """A column's drift page, rendered from the night's stored statistics (no script: served like a report)."""
    from pipelines.surfaces.monitoring_page import read_column_page

    page = read_column_page(config, partition, position)
    if page is None:
        raise HTTPException(status_code=404, detail="no such column page")
    return Response(page, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)


@app.get("/model/{key}/reports/{partition}/{name}", dependencies=[Depends(require_airflow_login)])
def model_night_report(key: str, partition: str, name: str, request: Request) -> Response:
    from pipelines.surfaces.monitoring_page import read_report

    content = read_report(_model_config(key), partition, name)
    if content is None:
        raise HTTPException(status_code=404, detail="no such report")
    return _sandboxed(name, content, request)


@app.get("/model/{key}/models/{pair}/{name}", dependencies=[Depends(require_airflow_login)])
def model_comparison_report(key: str, pair: str, name: str, request: Request) -> Response:
    from pipelines.surfaces.monitoring_page import read_model_report

    content = read_model_report(_model_config(key), pair, name)
    if content is None:
        raise HTTPException(status_code=404, detail="no such comparison")
    return _sandboxed(name, content, request)


@app.get("/reports/{partition}/{name}", dependencies=[Depends(require_airflow_login)])
def report(partition: str, name: str, request: Request) -> Response:
    from pipelines.surfaces.monitoring_page import read_report

    content = read_report(_config(), partition, name)
    if content is None:
        raise HTTPException(status_code=404, detail="no such report")
    return _sandboxed(name, content, request)


@app.get("/models/{pair}/{name}", dependencies=[Depends(require_airflow_login)])
def model_report(pair: str, name: str, request: Request) -> Response:
    from pipelines.surfaces.monitoring_page import read_model_report

    content = read_model_report(_config(), pair, name)
    if content is None:
        raise HTTPException(status_code=404, detail="no such comparison")
    return _sandboxed(name, content, request)


def _sandboxed(name: str, content: bytes, request: Request | None = None) -> Response:
    """Serve a report file with the sandbox headers (HTML runs sandboxed, JSON is never rendered as a page).

    The file comes from the data root or the report store (pipelines.storage.report_store), whichever the config names.
    An Evidently page may also load the shared chart library from its folder's `../_lib/` (named with this host in
    its script-src: a sandboxed page has no origin of its own for 'self' to match).
    """
    if name.endswith(".html"):
        headers = REPORT_HEADERS
        if request is not None:
            lib = str(request.url.replace(query="", fragment="")).rsplit("/", 2)[0] + "/_lib/"
            policy = REPORT_HEADERS["Content-Security-Policy"].replace(
                "script-src 'unsafe-inline'", f"script-src {lib} 'unsafe-inline'"
            )
            headers = REPORT_HEADERS | {"Content-Security-Policy": policy}
        return Response(content, media_type="text/html; charset=utf-8", headers=headers)
    return Response(content, media_type="application/json", headers=DATA_HEADERS)


def _return_value(ti_key) -> object:
    """Read a task instance's XCom return value (global links are resolved in the api-server, next to the DB)."""
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(XComModel.value).where(
                XComModel.dag_id == ti_key.dag_id,
                XComModel.run_id == ti_key.run_id,
                XComModel.task_id == ti_key.task_id,
                XComModel.map_index == ti_key.map_index,
                XComModel.key == "return_value",
            )
        ).first()
    # task return values are stored in serde's form ({"__classname__": ...}); deserialize restores the typed value
    return deserialize(XComModel.deserialize_value(row)) if row else None


def _model_base(dag_id: str, base_dag: str) -> str:
    """Where a model's pages are: the plugin's root for a single model, `/model/<key>` for one of many."""
    return model_base(dag_id.removeprefix(base_dag).removeprefix("__"))


class DriftReportLink(BaseOperatorLink):
    """Extra link on batch_scoring.monitor_night: opens that night's Evidently drift report."""

    name = "Evidently drift report"

    def get_link(self, operator, *, ti_key) -> str:
        if not ti_key.dag_id.startswith("batch_scoring") or ti_key.task_id != "monitor_night":
            return ""
        from pipelines.core.contracts import NightSummary

        summary = _return_value(ti_key)
        base = _model_base(ti_key.dag_id, "batch_scoring")
        return report_route(summary.ds, "drift_overview.html", base) if isinstance(summary, NightSummary) else ""


class GateComparisonLink(BaseOperatorLink):
    """Extra link on retrain_model.evaluate_gate: opens the gate's side-by-side page of both models."""

    name = "Gate comparison"

    def get_link(self, operator, *, ti_key) -> str:
        if not ti_key.dag_id.startswith("retrain_model") or ti_key.task_id != "evaluate_gate":
            return ""
        from pipelines.core.contracts import GateResult

        gate = _return_value(ti_key)
        pair = gate.pair if isinstance(gate, GateResult) else None
        return comparison_route(pair, GATE_PAGE, _model_base(ti_key.dag_id, "retrain_model")) if pair else ""


class ModelMonitoringPlugin(AirflowPlugin):
    name = "model_monitoring"
    fastapi_apps = [{"app": app, "url_prefix": MONITORING_PREFIX, "name": "Model monitoring"}]
    external_views = [
        {
            "name": "Model monitoring",
            "href": f"{MONITORING_PREFIX}/",
            "destination": "nav",
            "url_route": "model-monitoring",
        }
    ]
    global_operator_extra_links = [DriftReportLink(), GateComparisonLink()]
    timetables = [NightTimetable]  # batch_scoring's schedule: Airflow (de)serializes only registered timetables
