"""The dashboard's pages and actions, as a Starlette application (`create_app`).

Every page is drawn on the server. A page's live part (`{% block live %}` in its template) is
fetched again every few seconds by dashboard.js with `?fragment=live` and swapped in place; no
page reloads. Reads run on worker threads through a small pool of connections (db.py); each
action is a POST carrying the session's CSRF token, refused when the dashboard is read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import psycopg
from psycopg.conninfo import conninfo_to_dict
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from pgqueue import admin, periodic
from pgqueue.app import App
from pgqueue.cli._show import ago, duration, error_line
from pgqueue.config import hide_password
from pgqueue.dashboard import charts
from pgqueue.dashboard.data import DepthSampler, Minute, last_hour
from pgqueue.dashboard.db import ConnectionPool
from pgqueue.dashboard.security import (
    MAX_FORM_BYTES,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Auth,
    LoginThrottle,
    Signer,
)
from pgqueue.errors import ConfigurationError, JobNotFound, PgQueueError
from pgqueue.inspect import jobs as inspect_jobs
from pgqueue.inspect import queues as inspect_queues
from pgqueue.inspect import workers as inspect_workers
from pgqueue.revisions import check_schema
from pgqueue.schedule import Schedule

logger = logging.getLogger("pgqueue.dashboard")

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
LIVE_SECONDS = 5  # how often a page's live part is fetched again
# How long every open page shares one read of the overview's and the queues' numbers.
SHARED_SECONDS = 2.0
# The time range choices of the jobs page, in seconds ago ("" = no bound).
TIME_CHOICES = (
    ("", "any time"),
    ("300", "5 minutes ago"),
    ("3600", "1 hour ago"),
    ("21600", "6 hours ago"),
    ("86400", "24 hours ago"),
    ("604800", "7 days ago"),
)
# The farthest back a time bound reaches: further, the database's timestamps overflow (a
# crafted query would read as database trouble).
MAX_SECONDS_AGO = 100 * 365 * 86400
JOB_ACTIONS = ("retry", "cancel", "delete")
SCHEDULE_ACTIONS = ("enable", "disable", "run")
QUEUE_ACTIONS = ("pause", "resume")
DB_TROUBLE = (psycopg.Error, PgQueueError, OSError)


class Dashboard:
    """The state behind the routes: the App, its connections, the depth sampler, the
    templates, and who may do what."""

    def __init__(self, app: App, auth: Auth | None, read_only: bool, secret: str | None) -> None:
        self.app = app
        self.auth = auth
        self.read_only = read_only
        self.throttle = LoginThrottle()
        self.signer = Signer(secret, auth)
        self.pool = ConnectionPool(app)
        self.sampler = DepthSampler(app)
        self.database = describe_dsn(app.dsn)
        self.host = socket.gethostname()
        self._schema_checked = False
        self._shared: dict[Callable[..., Any], tuple[float, int, Any]] = {}
        self._shared_locks: dict[Callable[..., Any], threading.Lock] = {}
        self._shared_lock = threading.Lock()
        self._generation = 0  # one more at each action: what was shared before is forgotten
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            when=_when, ago=ago, duration=duration, pretty=_pretty, error_line=error_line
        )

    # -- database -------------------------------------------------------------------------

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(conn, *args, **kwargs)` on a pooled connection, on a worker thread."""
        return await run_in_threadpool(self._read, fn, *args, **kwargs)

    def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.pool.connection() as conn:
            if not self._schema_checked:
                check_schema(conn)
                self._schema_checked = True
            return fn(conn, *args, **kwargs)

    async def shared(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """`fn(conn)` read at most once every SHARED_SECONDS for every page open at once:
        each refreshes its live part every LIVE_SECONDS, and ten of them must cost the
        database what one does. One read at a time; the others wait for it and share it.
        An action forgets every shared read (its page must show what it did)."""
        return await run_in_threadpool(self._shared_read, fn)

    def _shared_read(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._shared_lock:
            lock = self._shared_locks.setdefault(fn, threading.Lock())
        with lock:
            kept = self._shared.get(fn)
            if (
                kept is not None
                and kept[1] == self._generation
                and time.monotonic() - kept[0] < SHARED_SECONDS
            ):
                return kept[2]
            generation, started = self._generation, time.monotonic()
            value = self._read(fn)
            if generation == self._generation:  # no action while it was read
                self._shared[fn] = (started, generation, value)
            return value

    def forget_shared(self) -> None:
        self._generation += 1
        self._shared.clear()

    # -- rendering ------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        template = self.templates.get_template(name)
        values = {**self.common(request), **context}
        if request.query_params.get("fragment") == "live" and "live" in template.blocks:
            body = "".join(template.blocks["live"](template.new_context(values)))
        else:
            body = template.render(values)
        return HTMLResponse(body, status_code=status)

    def common(self, request: Request) -> dict[str, Any]:
        session = request.state.session
        return {
            "base": base_path(request),
            "path": request.url.path,
            "csrf": self.signer.csrf_token(session),
            "user": session.get("u"),
            "auth": self.auth is not None,
            "read_only": self.read_only,
            "database": self.database,
            "live_seconds": LIVE_SECONDS,
            "done": _done_message(request.query_params),
        }

    def failure(self, request: Request, status: int, message: str) -> Response:
        message = hide_password(message, self.app.dsn)
        return self.render(request, "error.html", {"status": status, "message": message}, status)


def base_path(request: Request) -> str:
    """Where the dashboard is mounted ('' at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def describe_dsn(dsn: str) -> str:
    """host:port/database, never the user or the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(the configured database)"
    host = str(params.get("host") or "localhost")
    if host.startswith("/"):
        host = "local socket"
    port = f":{params['port']}" if params.get("port") else ""
    return f"{host}{port}/{params.get('dbname') or params.get('user') or ''}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# What an action did, read back from the redirect's query (a fixed text per action: nothing
# from the query is shown but counts).
DONE_TEXT = {
    "retry": "{n} job(s) put back in the queue",
    "cancel": "{n} job(s) cancelled or asked to stop",
    "delete": "{n} job(s) deleted",
    "pause": "queue paused: no worker starts its jobs until it is resumed",
    "resume": "queue resumed",
    "enable": "schedule enabled",
    "disable": "schedule disabled",
    "run": "schedule's job enqueued",
}


def is_number(value: str) -> bool:
    """Whether `value` is a whole number written in ASCII digits: str.isdigit() alone also
    takes superscripts such as '²', which int() refuses."""
    return value.isascii() and value.isdigit()


def _done_message(query: Mapping[str, str]) -> str | None:
    action = query.get("done")
    if action not in DONE_TEXT:
        return None
    n = query.get("n", "0")
    text = DONE_TEXT[action].format(n=int(n) if is_number(n) else 0)
    skipped = query.get("skipped", "0")
    if is_number(skipped) and int(skipped):
        text += f"; {int(skipped)} could not be (not found, or in the wrong state)"
    return text


# -- security: headers on every response, checks on every page and action ------------------


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (pages, fragments, static files, errors)."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.inner(scope, receive, sending)


Handler = Callable[[Dashboard, Request], Awaitable[Response]]


def guarded(
    dash: Dashboard, handler: Handler, *, action: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for `handler`: the session (made on the first visit), the login when auth
    is configured, and for an `action` (a POST) the CSRF token and the read-only rule.
    Database trouble becomes a 503 page with one line, the DSN's password hidden."""

    async def endpoint(request: Request) -> Response:
        session = dash.signer.loads(request.cookies.get(SESSION_COOKIE))
        fresh = session is None
        request.state.session = session if session is not None else dash.signer.new_session(None)
        try:
            response = await _checked(dash, handler, request, action, fresh)
        finally:
            if action:
                dash.forget_shared()
        if fresh:
            set_session(response, request, dash.signer.dumps(request.state.session))
        return response

    return endpoint


async def _checked(
    dash: Dashboard, handler: Handler, request: Request, action: bool, fresh: bool
) -> Response:
    session = request.state.session
    logged_in = dash.auth is None or session.get("u") is not None
    if action:
        request.state.form = await read_form(request)
        if fresh or not dash.signer.csrf_ok(session, request.state.form.get("csrf")):
            return dash.failure(
                request,
                403,
                "this form has expired or did not come from the dashboard: reload the page "
                "and try again",
            )
        if handler not in (login_submit, logout):
            if not logged_in:
                return dash.failure(request, 403, "log in first")
            if dash.read_only:
                return dash.failure(request, 403, "this dashboard is read-only")
    elif not logged_in and handler is not login_page:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"{base_path(request)}/login?next={urllib.parse.quote(target)}"
        return RedirectResponse(login, status_code=303)
    try:
        return await handler(dash, request)
    except JobNotFound as exc:
        return dash.failure(request, 404, str(exc))
    except periodic.ScheduleNotFound as exc:
        return dash.failure(request, 404, str(exc))
    except ConfigurationError as exc:
        return dash.failure(request, 400, str(exc))
    except psycopg.DataError as exc:
        # A value the database refuses (a NUL in a filter, a time out of range): the
        # request's fault, not the database's.
        return dash.failure(request, 400, " ".join(str(exc).split()))
    except DB_TROUBLE as exc:
        return dash.failure(request, 503, " ".join(str(exc).split()) or type(exc).__name__)


async def read_form(request: Request) -> dict[str, Any]:
    """An urlencoded form: single values as str, repeated ones (`ids`) as lists. Anything
    else (another encoding, a body over MAX_FORM_BYTES) reads as an empty form, which no
    CSRF check passes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    pairs = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values if key == "ids" else values[-1] for key, values in pairs.items()}


def set_session(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=(base_path(request) or "") + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _inside(target: str, base: str) -> bool:
    """Whether `target` is a path under `base` as a browser reads it too: browsers drop tabs
    and newlines from a URL ('/\\t/evil' is '//evil', another site) and read a backslash as a
    slash, so neither may appear."""
    if any(c < " " or c in "\\\x7f" for c in target):
        return False
    return target.startswith(base + "/") and not target.startswith("//")


def back_to(request: Request, fallback: str, **done: Any) -> RedirectResponse:
    """303 to the form's `next` (a path of this dashboard only), else `fallback`, telling the
    page what was done."""
    base = base_path(request)
    target = str(request.state.form.get("next") or "")
    if not _inside(target, base):
        target = base + fallback
    parts = urllib.parse.urlsplit(target)
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query)
        if k not in ("done", "n", "skipped", "fragment")
    ]
    query += [(k, str(v)) for k, v in done.items()]
    return RedirectResponse(
        urllib.parse.urlunsplit(("", "", parts.path, urllib.parse.urlencode(query), "")),
        status_code=303,
    )


# -- login -----------------------------------------------------------------------------------


async def login_page(dash: Dashboard, request: Request) -> Response:
    if dash.auth is None:
        return RedirectResponse(base_path(request) + "/", status_code=303)
    return dash.render(
        request, "login.html", {"next": request.query_params.get("next", ""), "error": None}
    )


async def login_submit(dash: Dashboard, request: Request) -> Response:
    form = request.state.form
    if dash.auth is None:
        return RedirectResponse(base_path(request) + "/", status_code=303)
    client = request.client.host if request.client else "unknown"
    if dash.throttle.blocked(client):
        logger.warning("dashboard login refused for %s: too many failed attempts", client)
        return dash.render(
            request,
            "login.html",
            {"next": form.get("next", ""), "error": "too many failed logins: wait a few minutes"},
            status=429,
        )
    user = dash.auth.check(
        str(form.get("username", "")), str(form.get("password", "")), str(form.get("token", ""))
    )
    if user is None:
        dash.throttle.failed(client)
        logger.warning("dashboard login failed from %s", client)
        return dash.render(
            request,
            "login.html",
            {"next": form.get("next", ""), "error": "wrong credentials"},
            status=401,
        )
    logger.info("dashboard login: %s from %s", user, client)
    # A new session (a new nonce, so a new CSRF token) at each login.
    request.state.session = dash.signer.new_session(user)
    response = back_to(request, "/")
    set_session(response, request, dash.signer.dumps(request.state.session))
    return response


async def logout(dash: Dashboard, request: Request) -> Response:
    response = RedirectResponse(base_path(request) + "/login", status_code=303)
    set_session(response, request, dash.signer.dumps(dash.signer.new_session(None)))
    return response


# -- pages -----------------------------------------------------------------------------------


def _queues_and_failures(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return {
        "report": inspect_queues.queue_status(conn),
        "failures": inspect_jobs.list_jobs(conn, statuses=("failed",), limit=10),
    }


def _last_hour(conn: psycopg.Connection[Any]) -> list[Minute]:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return last_hour(conn, row[0])


async def overview(dash: Dashboard, request: Request) -> Response:
    # Two reads on two connections at once: the page waits for the longer, not for both.
    data, minutes = await asyncio.gather(dash.shared(_queues_and_failures), dash.shared(_last_hour))
    at = [m.at for m in minutes]
    depth = dash.sampler.history()
    depth_at = [s.at for s in depth]
    figures = {
        "ended": charts.stacked_bars(
            at,
            {
                o: [m.ended[o] for m in minutes]
                for o in ("succeeded", "retried", "failed", "cancelled")
            },
            title="jobs ended per minute, by outcome",
        ),
        "wait": charts.lines(
            at,
            {p: [m.wait[p] for m in minutes] for p in ("p50", "p95", "p99")},
            title="pickup wait per minute (p50, p95, p99)",
            unit="s",
        ),
        "duration": charts.lines(
            at,
            {p: [m.duration[p] for m in minutes] for p in ("p50", "p95", "p99")},
            title="attempt duration per minute (p50, p95, p99)",
            unit="s",
        ),
        "depth": charts.lines(
            depth_at,
            {
                k: [float(getattr(s, k)) for s in depth]
                for k in ("ready", "scheduled", "running", "waiting")
            },
            title="queue depth, all queues (sampled every 10 s)",
        ),
    }
    return dash.render(
        request,
        "overview.html",
        {**data, "minutes": minutes, "charts": figures, "page": "overview"},
    )


async def queues_page(dash: Dashboard, request: Request) -> Response:
    report = await dash.shared(inspect_queues.queue_status)
    return dash.render(request, "queues.html", {"report": report, "page": "queues"})


async def queue_action(dash: Dashboard, request: Request) -> Response:
    name = request.path_params["name"]
    action = request.path_params["action"]
    if action not in QUEUE_ACTIONS:
        return dash.failure(request, 404, f"no queue action {action!r}")
    by = f"dashboard:{request.state.session.get('u') or 'anonymous'}@{dash.host}"
    if action == "pause":
        await dash.read(admin.pause, name, by)
    else:
        await dash.read(admin.resume, name)
    return back_to(request, "/queues", done=action)


def _filters(query: Mapping[str, str], statuses: list[str]) -> dict[str, Any]:
    """The jobs page's filters from its query; a bad value raises ConfigurationError."""
    chosen = [s for s in statuses if s]
    bad = [s for s in chosen if s not in inspect_jobs.STATUSES]
    if bad:
        raise ConfigurationError(f"unknown job status {bad[0]!r}")

    def seconds(name: str) -> float | None:
        value = query.get(name, "")
        if not value:
            return None
        if not is_number(value) or int(value) > MAX_SECONDS_AGO:
            raise ConfigurationError(
                f"{name} must be a number of seconds, at most {MAX_SECONDS_AGO} (100 years)"
            )
        return float(value)

    before = query.get("before", "")
    if before and not is_number(before):
        raise ConfigurationError("before must be a job id")
    return {
        "queue": query.get("queue") or None,
        "task": query.get("task") or None,
        "statuses": tuple(chosen),
        "since": seconds("since"),
        "until": seconds("until"),
        "text": query.get("q") or None,
        "before": int(before) if before else None,
    }


async def jobs_page(dash: Dashboard, request: Request) -> Response:
    query = request.query_params
    filters = _filters(query, query.getlist("status"))
    page = await dash.read(inspect_jobs.list_jobs, limit=PAGE_SIZE, **filters)
    next_url = None
    if page.next_before is not None:
        pairs = [(k, v) for k, v in query.multi_items() if k not in ("before", "done", "n")]
        pairs.append(("before", str(page.next_before)))
        next_url = f"{base_path(request)}/jobs?{urllib.parse.urlencode(pairs)}"
    return dash.render(
        request,
        "jobs.html",
        {
            "page_of_jobs": page,
            "filters": filters,
            "query": query,
            "statuses": inspect_jobs.STATUSES,
            "time_choices": TIME_CHOICES,
            "next_url": next_url,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "page": "jobs",
        },
    )


def _job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    return {"job": inspect_jobs.job_detail(conn, job_id)}


async def job_page(dash: Dashboard, request: Request) -> Response:
    job_id = request.path_params["job_id"]
    data = await dash.read(_job, job_id)
    return dash.render(request, "job.html", {**data, "page": "jobs"})


def _act_on_jobs(conn: psycopg.Connection[Any], action: str, ids: list[int]) -> tuple[int, int]:
    if action == "retry":
        results = admin.retry(conn, ids)
    elif action == "cancel":
        results = admin.cancel(conn, ids, reason="cancelled from the dashboard")
    else:
        results = admin.delete(conn, ids)
    done = sum(1 for r in results if r.result == "done")
    return done, len(results) - done


async def jobs_action(dash: Dashboard, request: Request) -> Response:
    form = request.state.form
    action = form.get("action")
    if action not in JOB_ACTIONS:
        return dash.failure(request, 400, "choose retry, cancel or delete")
    raw = form.get("ids") or []
    if any(not is_number(str(i)) for i in raw):
        return dash.failure(request, 400, "job ids are numbers")
    ids = [int(i) for i in raw]
    if not ids:
        return back_to(request, "/jobs", done=action, n=0)
    done, skipped = await dash.read(_act_on_jobs, action, ids)
    return back_to(request, "/jobs", done=action, n=done, skipped=skipped)


async def job_action(dash: Dashboard, request: Request) -> Response:
    job_id = request.path_params["job_id"]
    action = request.path_params["action"]
    if action not in JOB_ACTIONS:
        return dash.failure(request, 404, f"no job action {action!r}")
    done, skipped = await dash.read(_act_on_jobs, action, [job_id])
    if action == "delete" and done:
        request.state.form["next"] = ""  # its page is gone: back to the list
        return back_to(request, "/jobs", done=action, n=done, skipped=skipped)
    return back_to(request, f"/jobs/{job_id}", done=action, n=done, skipped=skipped)


async def workers_page(dash: Dashboard, request: Request) -> Response:
    fleet = await dash.read(inspect_workers.list_workers, 20)
    return dash.render(request, "workers.html", {"fleet": fleet, "page": "workers"})


def _schedules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = periodic.list_schedules(conn)
    for row in rows:
        try:
            row["spec"] = Schedule.from_row(row).spec
            row["state"] = periodic.schedule_state(row)
        except Exception:  # stored by an older pgqueue or by hand: shown all the same
            row["spec"] = row["cron"] or f"every {row['every_seconds']} s"
            row["state"] = "invalid"
    return rows


async def schedules_page(dash: Dashboard, request: Request) -> Response:
    rows = await dash.read(_schedules)
    known = set(dash.app.tasks)
    return dash.render(
        request, "schedules.html", {"schedules": rows, "known": known, "page": "schedules"}
    )


async def schedule_action(dash: Dashboard, request: Request) -> Response:
    name = request.path_params["name"]
    action = request.path_params["action"]
    if action not in SCHEDULE_ACTIONS:
        return dash.failure(request, 404, f"no schedule action {action!r}")
    if action == "run":
        await dash.read(periodic.run_now, dash.app, name)
    else:
        await dash.read(periodic.set_enabled, name, action == "enable")
    return back_to(request, "/schedules", done=action)


# -- the application -------------------------------------------------------------------------


def create_app(
    app_or_dsn: App | str,
    *,
    auth: Auth | None = None,
    read_only: bool = False,
    secret: str | None = None,
) -> DashboardApp:
    """The dashboard as an ASGI application, for `pgqueue dashboard` or to mount in yours
    (`api.mount("/pgqueue", create_app(queue, auth=...))`).

    `app_or_dsn`: the App whose tasks it knows (needed to run a schedule now), or a DSN.
    `auth`: who may use it (`Auth(token=...)`, `Auth(username=..., password=...)`, or
    `Auth.from_env()`); None leaves it open to whoever reaches it: mount it behind your own
    authentication then. `read_only`: no action is shown, and the server refuses them.
    `secret`: the key that signs sessions (default: PGQUEUE_DASHBOARD_SECRET, else random per
    process; give every process that serves one dashboard the same one).
    """
    app = app_or_dsn if isinstance(app_or_dsn, App) else App(app_or_dsn)
    dash = Dashboard(app, auth, read_only, secret)

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return guarded(dash, handler)

    def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return guarded(dash, handler, action=True)

    routes = [
        Route("/", page(overview), methods=["GET"]),
        Route("/login", page(login_page), methods=["GET"]),
        Route("/login", action(login_submit), methods=["POST"]),
        Route("/logout", action(logout), methods=["POST"]),
        Route("/queues", page(queues_page), methods=["GET"]),
        Route("/queues/{name}/{action}", action(queue_action), methods=["POST"]),
        Route("/jobs", page(jobs_page), methods=["GET"]),
        Route("/jobs", action(jobs_action), methods=["POST"]),
        Route("/jobs/{job_id:int}", page(job_page), methods=["GET"]),
        Route("/jobs/{job_id:int}/{action}", action(job_action), methods=["POST"]),
        Route("/workers", page(workers_page), methods=["GET"]),
        Route("/schedules", page(schedules_page), methods=["GET"]),
        # A schedule's name may hold a slash (the default name of "*/5 * * * *" does).
        Route("/schedules/{name:path}/{action}", action(schedule_action), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Run when the dashboard is served on its own; a mounting application's own lifespan
        # does not reach it, and its sampler thread and connections end with the process.
        yield
        dash.sampler.stop()
        dash.pool.close()

    starlette = Starlette(routes=routes, lifespan=lifespan)
    starlette.state.dashboard = dash
    return DashboardApp(starlette, dash)


class DashboardApp(SecurityHeaders):
    """What `create_app` returns: the ASGI application, and `close()` for an application that
    mounts it (a mount does not pass lifespan events on): call it at your shutdown to stop the
    depth sampler and close the dashboard's connections."""

    def __init__(self, inner: ASGIApp, dashboard: Dashboard) -> None:
        super().__init__(inner)
        self.dashboard = dashboard

    def close(self) -> None:
        self.dashboard.sampler.stop()
        self.dashboard.pool.close()
