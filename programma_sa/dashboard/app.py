"""The dashboard itself: configuration, routing, pages and the action endpoint.

:class:`Dashboard` answers a :class:`~._web.WebRequest` with a
:class:`~._web.WebResponse`; the framework adapters (:mod:`.asgi`, :mod:`.blueprint`)
only translate. Reads run in a session of their own that is closed (rolled back)
afterwards; an action runs in a transaction of its own that commits when the action
returns, so nothing else of the application's is ever committed by the dashboard.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..exceptions import ConfigurationError, DuplicateJob, InvalidJobInput, JobNotFound
from ..models import JobState
from ..queue import JobQueue
from ..schedules import Schedule
from ._web import CSRF_COOKIE, CSRF_FIELD, WebRequest, WebResponse, csrf_refusal
from .actions import ACTIONS, Action, TopicView, required_field
from .bulk import BULK, BULK_LIMIT
from .chart import throughput_chart
from .listing import PAGE_SIZE, JobFilter, job_page
from .live import ChangeFeed
from .render import render

__all__ = ["VIEW", "Dashboard", "Permission"]

#: What the permission hook is asked for pages (actions: the action's name).
VIEW = "view"

#: The host's permission hook: ``(framework request, "view" or an action name) -> bool``.
Permission = Callable[[Any, str], bool]

#: The window of the overview's "last hour" counts and chart, and the chart's bars.
_WINDOW_SECONDS = 3600.0
_CHART_BARS = 12

_STATIC_TYPES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


#: Every page's headers. Scripts only from the dashboard's own files (no inline script
#: runs, even if escaping were ever missed); not framed by other sites (clickjacking
#: of the action buttons); figures never cached.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _allow_views_only(request: Any, action: str) -> bool:
    return action == VIEW


class _NotFound(Exception):
    """The page or thing asked for does not exist (a 404 with this message)."""


class Dashboard:
    """A web dashboard of one jobs table, to mount in an application.

    :param queue: the application's :class:`~programma_sa.JobQueue`.
    :param bind: an :class:`~sqlalchemy.Engine`, or a function returning a new
        :class:`~sqlalchemy.orm.Session` (such as a ``sessionmaker``).
    :param permission: the host's hook, called for every request with the
        framework's request object and ``"view"`` (any page) or the action's name;
        False refuses it (403). Default: pages are shown, every action refused.
    :param read_only: no action is offered, and every POST is refused.
    :param schedules: the application's :class:`~programma_sa.Schedule` list, shown
        on the schedules page.
    :param poll_seconds: how often pages refresh themselves without an event stream
        (the polling fallback of the live updates).
    :param live: serve the event stream (LISTEN on a connection of its own, opened
        by the first open stream).
    """

    def __init__(
        self,
        queue: JobQueue,
        bind: Engine | Callable[[], Session],
        *,
        permission: Permission | None = None,
        read_only: bool = False,
        schedules: Sequence[Schedule] = (),
        poll_seconds: float = 10.0,
        live: bool = True,
    ) -> None:
        if not poll_seconds > 0:
            raise ConfigurationError(
                f"poll_seconds must be a positive number of seconds, got {poll_seconds!r}"
            )
        self.queue = queue
        self.new_session: Callable[[], Session] = (
            (lambda: Session(bind)) if isinstance(bind, Engine) else bind
        )
        self.permission = permission or _allow_views_only
        self.read_only = read_only
        self.schedules = tuple(schedules)
        self.poll_seconds = poll_seconds
        self.live = live
        self._feed: ChangeFeed | None = None
        self._feed_lock = threading.Lock()

    # -- live updates ----------------------------------------------------------------

    def feed(self) -> ChangeFeed | None:
        """The change feed (started on first use), or ``None`` when ``live`` is off
        (and from then on off, on a database without LISTEN: SQLite)."""
        if not self.live:
            return None
        # Two first streams may arrive at once (threads of Flask or of Starlette's
        # pool): the lock makes them share one feed, so one LISTEN connection.
        with self._feed_lock:
            if self._feed is None:
                with self.new_session() as session:
                    url = session.get_bind().engine.url
                if url.get_backend_name() != "postgresql":
                    # SQLite has no LISTEN: no event stream, the pages poll (docs/sqlite.md).
                    self.live = False
                    return None
                self._feed = ChangeFeed(url, self.queue.table)
            self._feed.start()
            return self._feed

    def close(self) -> None:
        """Stop the change feed's listener, if it runs."""
        if self._feed is not None:
            self._feed.stop()

    # -- requests ----------------------------------------------------------------------

    def handle(self, request: WebRequest) -> WebResponse:
        """The response to ``request`` (the event stream excepted: see the adapters)."""
        try:
            if request.path.startswith("/static/"):
                return self._static(request.path.removeprefix("/static/"))
            if request.path.startswith("/actions/"):
                if request.method != "POST":  # nothing changes on GET
                    return self._error(request, 405, "an action is a POST of its form")
                return self._act(request, request.path.removeprefix("/actions/"))
            if request.path == "/bulk" and request.method == "POST":
                return self._bulk(request)
            if request.method not in ("GET", "HEAD"):
                return self._error(request, 405, f"{request.method} is not allowed here")
            page = _PAGES.get(request.path)
            if page is None:
                raise _NotFound(f"no dashboard page at {request.path}")
            if not self.permission(request.native, VIEW):
                return self._error(request, 403, "you may not view the dashboard")
            template, context = page(self, request)
            return self._page(request, template, context)
        except _NotFound as missing:
            return self._error(request, 404, str(missing))
        except InvalidJobInput as refused:  # a page's criteria, such as the list's filter
            return self._error(request, 400, str(refused))

    def _page(
        self, request: WebRequest, template: str, context: dict[str, Any], status: int = 200
    ) -> WebResponse:
        token = request.csrf_token()
        body = render(
            template,
            base=request.base,
            path=request.path,
            query=request.query,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            read_only=self.read_only,
            live=self.live,
            poll_seconds=self.poll_seconds,
            notice=_notice(request.query.get("notice", "")),
            # What a date field of an action's form starts from (the host's clock).
            now=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **context,
        )
        response = WebResponse(
            status, body, headers=dict(_PAGE_HEADERS), cookie_path=request.base or "/"
        )
        if token != request.cookies.get(CSRF_COOKIE):
            response.csrf_cookie = token
        return response

    def _error(self, request: WebRequest, status: int, message: str) -> WebResponse:
        return self._page(request, "error.html", {"status": status, "message": message}, status)

    def _static(self, name: str) -> WebResponse:
        if name not in _STATIC_TYPES:
            raise _NotFound(f"no static file {name!r}")
        body = files("programma_sa.dashboard").joinpath("static").joinpath(name).read_bytes()
        return WebResponse(
            200, body, _STATIC_TYPES[name], {"Cache-Control": "public, max-age=3600"}
        )

    # -- actions -----------------------------------------------------------------------

    def _refusal(self, request: WebRequest, permission: str) -> WebResponse | None:
        """Why a POST may not change anything, checked in order: read-only, CSRF,
        the host's hook (asked for ``permission``); ``None`` when it may."""
        if self.read_only:
            return self._error(request, 403, "the dashboard is read-only")
        refusal = csrf_refusal(request)
        if refusal is not None:
            return self._error(request, 403, refusal)
        if not self.permission(request.native, permission):
            return self._error(request, 403, f"you may not {permission} here")
        return None

    def _act(self, request: WebRequest, name: str) -> WebResponse:
        """Refusals in order: read-only, unknown action, CSRF, the host's hook, the
        form; only then the action, in a transaction of its own."""
        if self.read_only:
            return self._error(request, 403, "the dashboard is read-only")
        action = ACTIONS.get(name)
        if action is None:
            raise _NotFound(f"no action {name!r}")
        refused = self._refusal(request, action.name)
        if refused is not None:
            return refused
        field = "job_id" if action.target == "job" else "topic"
        try:
            target = required_field(request.form, field)
            with self.new_session() as session, session.begin():
                changed = action.run(self.queue, session, target, request.form)
        except _REFUSALS as error:
            return self._error(request, _status(error), f"{action.label} refused: {error}")
        notice = f"{action.name}-{'done' if changed else 'unchanged'}"
        return WebResponse(303, headers={"Location": _after(request.base, action, target, notice)})

    def _bulk(self, request: WebRequest) -> WebResponse:
        """A bulk action's POST: the refusals of any action (asked for
        ``bulk-<name>``), then at most ``BULK_LIMIT`` jobs in one transaction."""
        bulk = BULK.get(request.form.get("action", ""))
        if bulk is None:
            raise _NotFound(f"no bulk action {request.form.get('action', '')!r}")
        refused = self._refusal(request, f"bulk-{bulk.name}")
        if refused is not None:
            return refused
        where = JobFilter.from_query(request.form)
        try:
            criteria = bulk.criteria(where)
            changed = bulk.run(self.queue, self.new_session, criteria)
        except _REFUSALS as error:
            message = f"{bulk.label} by filter refused: {error}"
            return self._error(request, _status(error), message)
        query = urlencode({**where.given(), "notice": f"bulk-{bulk.name}-{changed}"})
        return WebResponse(303, headers={"Location": f"{request.base}/jobs?{query}"})


#: What the queue refuses an action with (nothing written): its form or the job's
#: state (400), a job that is gone (404), a unique key another job holds now (409).
_REFUSALS = (InvalidJobInput, JobNotFound, DuplicateJob)


def _status(refused: Exception) -> int:
    if isinstance(refused, JobNotFound):
        return 404
    return 409 if isinstance(refused, DuplicateJob) else 400


def _after(base: str, action: Action, target: str, notice: str) -> str:
    if action.then == "list":
        return f"{base}/jobs?{urlencode({'notice': notice})}"
    page = "/job" if action.target == "job" else "/topic"
    key = "id" if action.target == "job" else "name"
    return f"{base}{page}?{urlencode({key: target, 'notice': notice})}"


def _notice(code: str) -> str | None:
    """The text of a notice code an action redirected with (unknown codes: none)."""
    name, _, outcome = code.rpartition("-")
    if name.startswith("bulk-") and name.removeprefix("bulk-") in BULK and outcome.isdigit():
        bulk, count = BULK[name.removeprefix("bulk-")], int(outcome)
        more = " (the most one confirmation takes: more may match)" if count >= BULK_LIMIT else ""
        return f"{bulk.label} by filter: {count} job{'' if count == 1 else 's'}{more}."
    action = ACTIONS.get(name)
    if action is None or outcome not in ("done", "unchanged"):
        return None
    return f"{action.label}: {'done' if outcome == 'done' else 'nothing to change'}."


# -- pages: each returns its template and context ------------------------------------


def _offered(dashboard: Dashboard, target: str, thing: object) -> list[Action]:
    """The actions a page of ``target`` ("job" or "topic") offers for ``thing``."""
    if dashboard.read_only:
        return []
    return [a for a in ACTIONS.values() if a.target == target and a.offered(thing)]


PageContext = tuple[str, dict[str, Any]]


def _overview(dashboard: Dashboard, request: WebRequest) -> PageContext:
    with dashboard.new_session() as session:
        stats = dashboard.queue.stats(session, window_seconds=_WINDOW_SECONDS)
        throughput = dashboard.queue.throughput(
            session, window_seconds=_WINDOW_SECONDS, buckets=_CHART_BARS
        )
    return "overview.html", {
        "stats": stats,
        "states": list(JobState),
        "chart": throughput_chart(throughput),
    }


def _topic(dashboard: Dashboard, request: WebRequest) -> PageContext:
    name = request.query.get("name", "")
    if not name:
        raise _NotFound("no topic named: give ?name=")
    with dashboard.new_session() as session:
        stats = dashboard.queue.stats(session, name, window_seconds=_WINDOW_SECONDS)
        paused = {p.topic: p.paused_at for p in dashboard.queue.paused_topics(session)}
    topic = stats.topic(name)
    return "topic.html", {
        "topic": topic,
        "paused_at": paused.get(name),
        "actions": _offered(dashboard, "topic", TopicView(name, name in paused)),
        "measured_at": stats.measured_at,
        "states": list(JobState),
        "schedules": [s for s in dashboard.schedules if s.topic == name],
    }


def _jobs(dashboard: Dashboard, request: WebRequest) -> PageContext:
    where = JobFilter.from_query(request.query)
    with dashboard.new_session() as session:
        page = job_page(dashboard.queue, session, where, request.query.get("cursor", ""))
    return "jobs.html", {
        "page": page,
        "page_size": PAGE_SIZE,
        "where": where,
        "states": list(JobState),
        "bulk": []
        if dashboard.read_only
        else [bulk for bulk in BULK.values() if bulk.refusal(where) is None],
    }


def _bulk_page(dashboard: Dashboard, request: WebRequest) -> PageContext:
    """The count a bulk action would take now, and (not read-only) its form."""
    name = request.query.get("action", "")
    bulk = BULK.get(name)
    if bulk is None:
        raise _NotFound(f"no bulk action {name!r} (retry or cancel)")
    where = JobFilter.from_query(request.query)
    with dashboard.new_session() as session:
        count = bulk.count(dashboard.queue, session, where)
    return "bulk.html", {"bulk": bulk, "where": where, "count": count, "limit": BULK_LIMIT}


def _job(dashboard: Dashboard, request: WebRequest) -> PageContext:
    given = request.query.get("id", "")
    try:
        job_id = uuid.UUID(given)
    except ValueError:
        raise _NotFound(f"no job with id {given!r} (not a UUID)") from None
    with dashboard.new_session() as session:
        job = dashboard.queue.get_job(session, job_id)
    if job is None:
        raise _NotFound(f"no job with id {job_id}")
    return "job.html", {"job": job, "actions": _offered(dashboard, "job", job)}


def _schedules(dashboard: Dashboard, request: WebRequest) -> PageContext:
    now = datetime.now(timezone.utc)
    rows = [(s, s.next_fire_times(now, 3)) for s in dashboard.schedules]
    return "schedules.html", {"rows": rows}


_PAGES: dict[str, Callable[[Dashboard, WebRequest], PageContext]] = {
    "/": _overview,
    "/topic": _topic,
    "/jobs": _jobs,
    "/job": _job,
    "/bulk": _bulk_page,
    "/schedules": _schedules,
}
