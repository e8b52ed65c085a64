"""`pgqueue dashboard`: serve the web dashboard (pgqueue.dashboard) with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

from pgqueue.cli._common import Parents, app_or_dsn, tcp_port
from pgqueue.errors import ConfigurationError

logger = logging.getLogger("pgqueue.dashboard")

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (a name or an address; no DNS lookup)."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalHostsOnly:
    """An ASGI wrapper that answers 421 to a request whose Host header names another machine.

    Without a login the dashboard trusts whoever reaches 127.0.0.1, and any web page can reach
    it under its own name: DNS rebinding points that name at 127.0.0.1, and the browser then
    sends the page's requests, and hands it the answers, as same-origin ones. The Host header
    still carries the page's name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not is_loopback(_host_name(scope)):
            await _refuse(send)
            return
        await self.inner(scope, receive, send)


def _host_name(scope: Any) -> str:
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    try:
        return urllib.parse.urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


async def _refuse(send: Any) -> None:
    from pgqueue.dashboard.security import SECURITY_HEADERS

    body = (
        b"421: this dashboard has no login, so it answers requests for localhost only; set "
        b"PGQUEUE_DASHBOARD_TOKEN to reach it under another name\n"
    )
    headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": 421, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _quiet_server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, which after a graceful stop on SIGTERM or SIGINT returns instead of
        raising the signal again: `pgqueue dashboard` then exits 0, as the worker does."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {
                sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietServer


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from pgqueue.dashboard import Auth, create_app
    except ImportError:
        raise ConfigurationError(
            "the dashboard needs Starlette, Jinja2 and uvicorn: pip install 'pgqueue[dashboard]'"
        ) from None
    auth = Auth.from_env()
    if auth is None and not is_loopback(args.host):
        raise ConfigurationError(
            f"the dashboard serves {args.host} only with authentication: set "
            "PGQUEUE_DASHBOARD_TOKEN (or PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD, "
            "or their _FILE forms), or keep the default --host 127.0.0.1"
        )
    app = app_or_dsn(args)
    app._connect_kwargs()  # a malformed DSN is a usage error now, not a 503 per page
    dashboard = create_app(app, auth=auth, read_only=args.read_only)
    asgi: Any = dashboard if auth is not None else LocalHostsOnly(dashboard)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    logger.info(
        "dashboard on http://%s:%d%s/ (%s%s)",
        shown,
        args.port,
        args.root_path,
        "login required" if auth else "no login: this machine only",
        ", read-only" if args.read_only else "",
    )
    config = uvicorn.Config(
        asgi,
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level="warning",
        server_header=False,
    )
    _quiet_server_class()(config).run()
    logger.info("dashboard stopped")
    return 0


def register(sub: Any, parents: Parents) -> None:
    dashboard = sub.add_parser(
        "dashboard",
        parents=[parents.common, parents.app],
        help="serve the web dashboard",
        description="Serve the web dashboard: live charts, queues (pause, resume), jobs "
        "(filter, retry, cancel, delete), workers and schedules (enable, disable, run now). "
        "It listens on 127.0.0.1 unless authentication is configured: PGQUEUE_DASHBOARD_TOKEN, "
        "or PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD (each also as NAME_FILE); "
        "without it, it answers requests addressed to localhost only (not to another name "
        "that resolves to this machine, as a web page would make one). "
        "Sessions are signed with PGQUEUE_DASHBOARD_SECRET (random per process if unset). "
        "--app lets it run schedules now (the app's tasks make their jobs). Needs the "
        "pgqueue[dashboard] extra.",
    )
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to listen on (default: 127.0.0.1; any other needs authentication)",
    )
    dashboard.add_argument(
        "--port", type=tcp_port, default=8808, metavar="PORT", help="port (default: 8808)"
    )
    dashboard.add_argument(
        "--read-only",
        action="store_true",
        help="show no action, and refuse them on the server too",
    )
    dashboard.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="the path a reverse proxy serves it under, e.g. /pgqueue (default: none)",
    )
    dashboard.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="proxies whose X-Forwarded-Proto/For are trusted (default: 127.0.0.1)",
    )
    dashboard.set_defaults(func=cmd_dashboard)
