"""The status page under ``/ui``: overview, incidents with approvals, logs with a live tail,
semantic search. Server-rendered Jinja2 (autoescaped) with htmx for partial updates.

Thin like the API: each handler checks the session, calls core services (incidents, fleet
status, actions, the store, semantic search) and renders. Who may do what is decided by
``core.actions`` (roles, two-person rule, expiry, audit); the page only says who is asking,
as ``Identity(platform="web", user_id=<name>, groups=(<role>,))``, and offers the buttons
to users whose page role is ``approver``.

Auth is the page's own (session cookies, see :mod:`devmesh.web.auth`), not the API's bearer
tokens: a browser cannot hold those safely. Every POST must echo the session's CSRF token
(hidden field, or the ``X-CSRF-Token`` header htmx sends for every request).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

import devmesh_core
from devmesh.web.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    LoginThrottle,
    Session,
    WebAuth,
    WebUser,
    csrf_ok,
)
from devmesh.web.queries import TailFilter, error_series, event_by_id, events_after, latest_id
from devmesh.web.svg import neighbourhood_svg, sparkline
from devmesh_core.errors import AuthError, DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.models import Level, StoredEvent, to_utc
from devmesh_core.reason.redact import Redactor
from devmesh_core.store.base import LogQuery
from devmesh_core.timeparse import parse_time

if TYPE_CHECKING:
    from devmesh_core.actions.models import ActionRequest, Identity
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.service import IncidentService
    from devmesh_core.runtime import Core

log = get_logger(__name__)

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
PREFIX = "/ui"

PAGE_SIZE = 100
TAIL_POLL_SECONDS = 1.0
TAIL_PING_SECONDS = 15.0
TAIL_LIFETIME_SECONDS = 15 * 60
"""A stream ends after this long; the browser's EventSource reconnects (with Last-Event-ID),
which re-checks the session, so a logged-out user's tail stops within minutes."""
TAIL_LOOKBACK_IDS = 256
"""Ids below the watermark re-read each poll: MariaDB may commit a lower id after a higher
one (concurrent inserts), and such a line must still reach the tail."""

router = APIRouter(prefix=PREFIX, include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_init_lock = threading.Lock()

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------------ formatting


def fmt_time(value: datetime | None) -> str:
    """``2024-05-01 12:03:04Z`` (UTC, second precision): what a person compares."""
    if value is None:
        return "–"
    return to_utc(value).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_ago(value: datetime | None, now: datetime | None = None) -> str:
    """``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if value is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - to_utc(value)).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={devmesh_core.__version__}"


_env.globals.update(static=static_url, fmt_time=fmt_time, fmt_ago=fmt_ago, prefix=PREFIX)
_env.filters["urlq"] = lambda v: quote(str(v), safe="")


# ------------------------------------------------------------------------ app state


class WebState:
    """The page's per-app objects, made on first request (the app's lifespan is shared)."""

    def __init__(self, core: Core) -> None:
        self.auth = WebAuth(core.settings.data_dir)
        self.throttle = LoginThrottle()
        self.redactor = Redactor(core.settings)


def _core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


def web_state(request: Request) -> WebState:
    """The app's :class:`WebState` (created once, thread-safe)."""
    state = getattr(request.app.state, "web", None)
    if state is None:
        with _init_lock:
            state = getattr(request.app.state, "web", None)
            if state is None:
                state = WebState(_core(request))
                request.app.state.web = state
    assert isinstance(state, WebState)
    return state


def incidents_of(core: Core) -> IncidentService:
    """``core.incidents``, made over the core's store if the process has not set it."""
    from devmesh_core.detect.loop import incident_service

    return incident_service(core)


def actions_of(core: Core) -> ActionService:
    """``core.actions``, made over the core's store if the process has not set it."""
    if core.actions is None:
        with _init_lock:
            if core.actions is None:
                from devmesh_core.actions.service import ActionService

                core.actions = ActionService.from_core(core)
    service: ActionService = core.actions
    return service


def identity_of(user: WebUser) -> Identity:
    """How the action layer sees a page user: ``web:<name>``, with the page role as a group
    (so ``ActionSettings.roles`` may grant it with the key ``web-role:approver``)."""
    from devmesh_core.actions.models import Identity

    return Identity(platform="web", user_id=user.name, display=user.name, groups=(user.role,))


# ------------------------------------------------------------------------ sessions


@dataclass(slots=True)
class Visit:
    """One request's session, its user (if logged in) and whether the cookie must be set."""

    session: Session
    user: WebUser | None
    fresh: bool


def _visit(request: Request) -> Visit:
    auth = web_state(request).auth
    session = auth.load_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return Visit(auth.new_session(None), None, True)
    user = auth.session_user(session)
    if user is None and session.user is not None:  # user removed or password changed
        return Visit(auth.new_session(None), None, True)
    return Visit(session, user, False)


def _login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PREFIX}/login?" + urlencode({"next": target})


def _logged_in(request: Request) -> tuple[Visit, WebUser]:
    """The visit of a logged-in user, or a redirect to the login page."""
    visit = _visit(request)
    if visit.user is None:
        url = _login_url(request)
        if request.headers.get("hx-request"):
            raise HTTPException(401, "login required", headers={"HX-Redirect": url})
        raise HTTPException(303, "login required", headers={"Location": url})
    return visit, visit.user


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        web_state(request).auth.dump_session(session),
        max_age=SESSION_MAX_AGE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def _check_csrf(request: Request, visit: Visit, sent: str | None) -> None:
    token = sent or request.headers.get("x-csrf-token")
    if visit.fresh or not csrf_ok(visit.session, token):
        raise HTTPException(403, "the form has expired or did not come from this page; reload it")


def _safe_next(value: str | None) -> str:
    """Only local page paths: never an open redirect to another site."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


def render(
    request: Request,
    template: str,
    visit: Visit,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a template with the page's common context and security headers."""
    context.setdefault("redact", web_state(request).redactor.redact)
    html = _env.get_template(template).render(
        user=visit.user,
        csrf=visit.session.csrf,
        path=request.url.path,
        now=datetime.now(UTC),
        version=devmesh_core.__version__,
        **context,
    )
    response = HTMLResponse(
        html, status_code=status, headers={**_SECURITY_HEADERS, **(headers or {})}
    )
    if visit.fresh:
        _set_cookie(request, response, visit.session)
    return response


def _error(request: Request, visit: Visit, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", visit, status=status, message=message)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


# ------------------------------------------------------------------------ login


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    visit = _visit(request)
    if visit.user is not None:
        return _redirect(_safe_next(next))
    return render(request, "login.html", visit, next=_safe_next(next), error=None)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    visit = _visit(request)
    await _check_csrf(request, visit, csrf)
    state = web_state(request)
    name = username.strip()
    address = request.client.host if request.client else "unknown"
    wait = state.throttle.retry_after(name, address)
    if wait > 0:
        log.warning("web_login_throttled", user=name[:64], address=address)
        return render(
            request,
            "login.html",
            visit,
            status=429,
            next=_safe_next(next),
            headers={"Retry-After": str(max(1, round(wait)))},
            error=f"Too many failed logins. Try again in {max(1, round(wait / 60))} min.",
        )
    user = await run_in_threadpool(state.auth.authenticate, name, password)
    if user is None:
        state.throttle.failed(name, address)
        log.info("web_login_failed", user=username[:64], address=address)
        return render(
            request,
            "login.html",
            visit,
            status=401,
            next=_safe_next(next),
            error="Wrong user name or password.",
        )
    state.throttle.succeeded(name)
    log.info("web_login", user=user.name)
    response = _redirect(_safe_next(next))
    _set_cookie(request, response, state.auth.new_session(user))
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    visit = _visit(request)
    await _check_csrf(request, visit, csrf)
    response = _redirect(f"{PREFIX}/login")
    _set_cookie(request, response, web_state(request).auth.new_session(None))
    return response


@router.get("/link")
def link_page(request: Request, token: str = "") -> Response:
    """The landing page of a one-time link. It does not log in by itself: chat apps fetch
    links to preview them, and that fetch must not burn the token. The button does."""
    visit = _visit(request)
    return render(request, "link.html", visit, token=token[:128], error=None)


@router.post("/link")
async def link_login(
    request: Request,
    token: Annotated[str, Form(max_length=128)] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    visit = _visit(request)
    await _check_csrf(request, visit, csrf)
    auth = web_state(request).auth
    try:
        user = await run_in_threadpool(auth.consume_link, token)
    except AuthError as exc:
        return render(request, "link.html", visit, status=401, token="", error=str(exc))
    log.info("web_login_link", user=user.name)
    response = _redirect(f"{PREFIX}/")
    _set_cookie(request, response, auth.new_session(user))
    return response


# ------------------------------------------------------------------------ overview


def _overview_data(core: Core) -> dict[str, Any]:
    from devmesh_core.detect.status import fleet_status

    now = datetime.now(UTC)
    status = fleet_status(core, now=now)
    series = error_series(core.store, now)
    incidents = incidents_of(core).list("active", limit=20)
    pending = actions_of(core).pending()
    severities = ["critical", "high", "medium", "low"]
    return {
        "fleet": status,
        "series": [
            (s, sparkline(s.errors, label=f"{s.service}: errors per 5 minutes")) for s in series
        ],
        "incidents": incidents,
        "severities": [(s, status.open_incidents.get(s, 0)) for s in severities],
        "pending": pending,
    }


@router.get("/")
def overview(request: Request) -> Response:
    visit, _user = _logged_in(request)
    data = _overview_data(_core(request))
    return render(request, "overview.html", visit, **data)


@router.get("/overview")
def overview_fragment(request: Request) -> Response:
    """The overview's body alone (htmx refreshes it every 30 s)."""
    visit, _user = _logged_in(request)
    data = _overview_data(_core(request))
    return render(request, "_overview_body.html", visit, **data)


# ------------------------------------------------------------------------ incidents


@router.get("/incidents")
def incidents_page(request: Request, state: str = "active") -> Response:
    visit, _user = _logged_in(request)
    try:
        incidents = incidents_of(_core(request)).list(state or None, limit=200)
    except InvalidInput as exc:
        return _error(request, visit, 422, str(exc))
    return render(request, "incidents.html", visit, incidents=incidents, state=state)


def _evidence_link(evidence_id: str) -> str | None:
    """Where a cited piece of evidence can be read on the page, if anywhere."""
    kind, _, key = evidence_id.partition(":")
    if kind == "event" and key.isdigit():
        return f"{PREFIX}/logs/event/{key}"
    if kind == "template" and key:
        return f"{PREFIX}/logs?" + urlencode({"template": key})
    if kind == "incident" and key:
        return f"{PREFIX}/incidents/{quote(key, safe='')}"
    if kind == "service" and key:
        return f"{PREFIX}/logs?" + urlencode({"service": key})
    if kind == "host" and key:
        return f"{PREFIX}/logs?" + urlencode({"host": key})
    return None


def _incident_data(core: Core, incident_id: str, user: WebUser) -> dict[str, Any]:
    from devmesh_core.reason.models import Diagnosis

    service = incidents_of(core)
    incident = service.get(incident_id)
    summary = service.summary(incident)
    diagnosis: Diagnosis | None = None
    diagnosis_error: str | None = None
    if incident.diagnosis:
        try:
            diagnosis = Diagnosis.model_validate(incident.diagnosis)
        except ValidationError as exc:
            diagnosis_error = (
                f"the stored diagnosis could not be read: {exc.error_count()} error(s)"
            )
    graph_svg = None
    graph_note = None
    origin = incident.origin_service or (incident.services[0] if incident.services else None)
    if origin is None:
        graph_note = "no service to place in the dependency graph"
    elif not core.settings.detect.use_graph:
        graph_note = "the knowledge graph is turned off (DEVMESH_DETECT__USE_GRAPH=false)"
    else:
        graph = core.graph()
        if graph is None:
            graph_note = "the knowledge graph is not available"
        else:
            try:
                nb = graph.neighbourhood(origin, templates=0, incidents=0)
                graph_svg = neighbourhood_svg(nb) if nb.known else None
                if not nb.known:
                    graph_note = f"the graph does not know {origin} yet"
            except DevMeshError as exc:
                graph_note = f"the knowledge graph could not be read: {exc}"
    actions = actions_of(core)
    requests = actions.requests(incident_id=incident.id, limit=50)
    return {
        "incident": incident,
        "summary": summary,
        "diagnosis": diagnosis,
        "diagnosis_error": diagnosis_error,
        "evidence_link": _evidence_link,
        "graph_svg": graph_svg,
        "graph_note": graph_note,
        "actions": [_action_view(actions, r, user) for r in requests],
    }


@dataclass(slots=True)
class ActionView:
    """An action request as a card shows it: may this user decide it, and if not why."""

    request: ActionRequest
    can_decide: bool
    why_not: str
    message: str | None = None
    error: bool = False


def _action_view(
    actions: ActionService,
    request: ActionRequest,
    user: WebUser,
    message: str | None = None,
    error: bool = False,
) -> ActionView:
    if request.status != "pending":
        return ActionView(request, False, f"it is {request.status}", message, error)
    if not user.can_approve:
        return ActionView(request, False, "your page role is read-only (viewer)", message, error)
    ok, why = actions.can_approve(identity_of(user), request)
    return ActionView(request, ok, "" if ok else why, message, error)


@router.get("/incidents/{incident_id}")
def incident_page(request: Request, incident_id: str) -> Response:
    visit, user = _logged_in(request)
    try:
        data = _incident_data(_core(request), incident_id, user)
    except NotFound as exc:
        return _error(request, visit, 404, str(exc))
    except InvalidInput as exc:
        return _error(request, visit, 422, str(exc))
    return render(
        request,
        "incident.html",
        visit,
        redact=web_state(request).redactor.redact,
        back=request.url.path,
        **data,
    )


@router.post("/actions/{request_id}/{decision}")
async def decide(
    request: Request,
    request_id: str,
    decision: str,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject an action request. The action layer enforces roles, the
    two-person rule, expiry and the audit trail; refusals are shown on the card."""
    visit, user = _logged_in(request)
    await _check_csrf(request, visit, csrf)
    if decision not in ("approve", "reject"):
        return _error(request, visit, 404, "unknown decision")
    if not user.can_approve:
        return _error(
            request, visit, 403, "your page role is read-only: you cannot approve or reject"
        )
    actions = actions_of(_core(request))
    identity = identity_of(user)
    message: str | None
    failed = False
    try:
        if decision == "approve":
            updated = await run_in_threadpool(actions.approve, request_id, identity)
        else:
            updated = await run_in_threadpool(actions.reject, request_id, identity, reason)
        message = (
            f"{'approved' if decision == 'approve' else 'rejected'} by you; now {updated.status}"
        )
        log.info("web_action_decided", id=request_id, by=identity.key, decision=decision)
    except NotFound as exc:
        return _error(request, visit, 404, str(exc))
    except (AuthError, InvalidInput) as exc:
        message, failed = str(exc), True
        updated = await run_in_threadpool(actions.get, request_id)
    view = _action_view(actions, updated, user, message, failed)
    if request.headers.get("hx-request"):
        return render(request, "_action.html", visit, a=view, back=_safe_next(next))
    if failed:
        return _error(request, visit, 403, message)
    return _redirect(_safe_next(next))


# ------------------------------------------------------------------------ logs


@dataclass
class LogFilters:
    """The logs form, as typed (strings) and as parsed."""

    service: str = ""
    host: str = ""
    level: str = ""
    since: str = ""
    until: str = ""
    text: str = ""
    template: str = ""
    limit: str = ""

    def query(self, cursor: str | None) -> LogQuery:
        """The store query (``InvalidInput`` naming a bad field)."""
        try:
            level = Level.parse(self.level) if self.level else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        start = parse_time(self.since) if self.since else None
        end = parse_time(self.until) if self.until else None
        if start is not None and end is not None and start >= end:
            raise InvalidInput("'since' must be before 'until'")
        return LogQuery(
            service=self.service or None,
            host=self.host or None,
            level=level,
            start_time=start,
            end_time=end,
            text=self.text or None,
            template_id=self.template or None,
            limit=int(self.limit) if self.limit.isdigit() else PAGE_SIZE,
            cursor=cursor or None,
        )

    def tail(self) -> TailFilter:
        query = self.query(None)
        return TailFilter(query.service, query.host, query.level, query.text)

    def params(self, **extra: str) -> str:
        """The query string of these filters (empty ones left out) plus ``extra``."""
        values = {k: v for k, v in asdict(self).items() if v}
        values.update({k: v for k, v in extra.items() if v})
        return urlencode(values)


def _filters(
    service: str | None,
    host: str | None,
    level: str | None,
    since: str | None,
    until: str | None,
    text: str | None,
    template: str | None,
) -> LogFilters:
    return LogFilters(
        *((v or "").strip()[:500] for v in (service, host, level, since, until, text, template))
    )


Q = Annotated[str | None, Query(max_length=500)]


@router.get("/logs")
def logs_page(
    request: Request,
    service: Q = None,
    host: Q = None,
    level: Q = None,
    since: Q = None,
    until: Q = None,
    text: Q = None,
    template: Q = None,
    cursor: Q = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
    highlight: int | None = None,
) -> Response:
    visit, _user = _logged_in(request)
    core = _core(request)
    flt = _filters(service, host, level, since, until, text, template)
    flt.limit = "" if limit == PAGE_SIZE else str(limit)
    error = None
    events: list[StoredEvent] = []
    next_cursor = None
    after = 0
    try:
        page = core.store.query(flt.query(cursor))
        events, next_cursor = page.events, page.next
        after = latest_id(core.store)
    except InvalidInput as exc:
        error = str(exc)
    live = not flt.until and not cursor and error is None
    return render(
        request,
        "logs.html",
        visit,
        status=422 if error else 200,
        f=flt,
        events=events,
        next_cursor=next_cursor,
        error=error,
        live=live,
        after=after,
        highlight=highlight,
        redact=web_state(request).redactor.redact,
    )


@router.get("/logs/rows")
def log_rows(
    request: Request,
    service: Q = None,
    host: Q = None,
    level: Q = None,
    since: Q = None,
    until: Q = None,
    text: Q = None,
    template: Q = None,
    cursor: Q = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
) -> Response:
    """The next (older) page of rows, for the "Older" button (keyset paging)."""
    visit, _user = _logged_in(request)
    flt = _filters(service, host, level, since, until, text, template)
    flt.limit = "" if limit == PAGE_SIZE else str(limit)
    try:
        page = _core(request).store.query(flt.query(cursor))
    except InvalidInput as exc:
        return _error(request, visit, 422, str(exc))
    return render(
        request,
        "_log_rows.html",
        visit,
        f=flt,
        events=page.events,
        next_cursor=page.next,
        highlight=None,
        redact=web_state(request).redactor.redact,
    )


def sse_message(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event; every line of ``data`` gets its own ``data:`` field."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return f"{head}event: {event}\n{lines}\n"


@router.get("/logs/stream")
async def log_stream(
    request: Request,
    service: Q = None,
    host: Q = None,
    level: Q = None,
    text: Q = None,
    after: int | None = None,
) -> Response:
    """Live tail: ``text/event-stream`` of rendered rows for lines stored after ``after``
    (or the browser's ``Last-Event-ID`` on reconnect), polling the store by id."""
    visit = _visit(request)
    if visit.user is None:
        return Response("login required", status_code=401, media_type="text/plain")
    core = _core(request)
    redact = web_state(request).redactor.redact
    try:
        flt = _filters(service, host, level, None, None, text, None).tail()
    except InvalidInput as exc:
        return Response(str(exc), status_code=422, media_type="text/plain")
    resume = request.headers.get("last-event-id", "")
    start = int(resume) if resume.isdigit() else after
    template = _env.get_template("_log_rows.html")

    async def events() -> Any:
        watermark = start if start is not None else await run_in_threadpool(latest_id, core.store)
        sent: dict[int, None] = {}
        yield f"retry: 3000\nid: {watermark}\n\n"
        began = last_ping = time.monotonic()
        while time.monotonic() - began < TAIL_LIFETIME_SECONDS:
            if await request.is_disconnected():
                return
            low = max(0, watermark - TAIL_LOOKBACK_IDS)
            found = await run_in_threadpool(events_after, core.store, low, flt)
            fresh = [e for e in found if e.id not in sent]
            if fresh:
                for e in fresh:
                    sent[e.id] = None
                while len(sent) > 4 * TAIL_LOOKBACK_IDS:
                    sent.pop(next(iter(sent)))
                watermark = max(watermark, fresh[-1].id)
                html = template.render(
                    events=list(reversed(fresh)),
                    next_cursor=None,
                    f=None,
                    highlight=None,
                    redact=redact,
                    fmt_time=fmt_time,
                )
                yield sse_message("rows", html, watermark)
                last_ping = time.monotonic()
            elif time.monotonic() - last_ping >= TAIL_PING_SECONDS:
                yield ": ping\n\n"
                last_ping = time.monotonic()
            await asyncio.sleep(TAIL_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/logs/event/{event_id}")
def event_page(request: Request, event_id: int) -> Response:
    visit, _user = _logged_in(request)
    core = _core(request)
    event = event_by_id(core.store, event_id)
    if event is None:
        return _error(request, visit, 404, f"no event {event_id} (deleted by retention?)")
    around = LogFilters(
        service=event.service,
        host=event.host,
        since=(event.timestamp - timedelta(minutes=5)).isoformat(),
        until=(event.timestamp + timedelta(minutes=5)).isoformat(),
    )
    return render(
        request,
        "event.html",
        visit,
        event=event,
        around=around.params(highlight=str(event.id)) + f"#ev-{event.id}",
        redact=web_state(request).redactor.redact,
    )


# ------------------------------------------------------------------------ search


@router.get("/search")
def search_page(
    request: Request,
    q: Annotated[str, Query(max_length=1_000)] = "",
    service: Q = None,
    host: Q = None,
    level: Q = None,
    since: Q = None,
) -> Response:
    visit, _user = _logged_in(request)
    core = _core(request)
    index, embedder = core.vector_index, core.embedder
    enabled = index is not None and embedder is not None
    flt = _filters(service, host, level, since, None, None, None)
    hits: list[Any] = []
    error = None
    q = q.strip()
    if index is not None and embedder is not None and q:
        from devmesh_core.vectors.search import search_templates

        try:
            query = flt.query(None)
            hits = search_templates(
                core.store,
                index,
                embedder,
                q,
                limit=20,
                service=query.service,
                host=query.host,
                level=query.level,
                since=query.start_time,
                examples=3,
            )
        except InvalidInput as exc:
            error = str(exc)
        except DevMeshError as exc:
            error = f"semantic search failed: {exc}"
    template = "_search_results.html" if request.headers.get("hx-request") else "search.html"
    return render(
        request,
        template,
        visit,
        status=422 if error and "failed" not in error else 200,
        q=q,
        f=flt,
        hits=hits,
        enabled=enabled,
        error=error,
        redact=web_state(request).redactor.redact,
    )
