"""A small Starlette site with pgqueue's dashboard mounted under /pgqueue/: a sign-up page
that enqueues a welcome email, and the dashboard that shows that job.

    export PGQUEUE_DSN=postgresql://localhost/signups
    pgqueue migrate
    PGQUEUE_DASHBOARD_TOKEN=... uvicorn --factory signups:create_site   # the site
    pgqueue worker --app signups:queue                                  # its worker

Nothing but `pip install 'pgqueue[dashboard]'`: Starlette, Jinja2 and uvicorn.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import pgqueue
from pgqueue.dashboard import Auth, create_app

# The DSN comes from PGQUEUE_DSN (or DATABASE_URL) when first needed.
queue = pgqueue.App()


@queue.task(queue="emails")
def send_welcome(address: str) -> str:
    return f"welcome sent to {address}"


async def sign_up(request: Request) -> JSONResponse:
    form = await request.json()
    job = await send_welcome.adelay(str(form["address"]))
    return JSONResponse({"welcome_job": job.id}, status_code=201)


def create_site(app: pgqueue.App = queue) -> Starlette:
    """The site on `app`'s database. Its dashboard asks for the credentials the environment
    gives (PGQUEUE_DASHBOARD_TOKEN, or PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD);
    with none it is open to whoever reaches it, as on uvicorn's default 127.0.0.1.

    A factory, not a module-level site: the dashboard reads the App's DSN when it is made,
    and the tests make one site per test database."""
    return Starlette(
        routes=[
            Route("/signups", sign_up, methods=["POST"]),
            Mount("/pgqueue", create_app(app, auth=Auth.from_env())),
        ]
    )
