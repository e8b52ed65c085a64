"""`pgqueue dashboard` as a real process: it refuses to listen beyond this machine without a
login, starts with one, serves the overview over real HTTP, and stops on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import pgqueue
from tests.acceptance.helpers import subprocess_env
from tests.conftest import ROOT, dsn_params, wait_until
from tests.dashboard.conftest import Jobs

TOKEN = "a-token-of-twenty-chars"
START_TIMEOUT = 60.0  # a cold Python start on a loaded 2-core machine can take a while
PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dashboard_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in subprocess_env(dsn, **extra).items()
        if not key.startswith("PGQUEUE_DASHBOARD_") or key in extra
    }
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgqueue", "dashboard", *args]


@contextlib.contextmanager
def serving(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The dashboard process, stopped by SIGTERM at the end (killed if it will not stop)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(*args),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def answer(process: subprocess.Popen[bytes], url: str, log: Path) -> httpx.Response:
    """GET `url` once the process answers it; fail if the process exits first."""

    def get() -> httpx.Response | None:
        if process.poll() is not None:
            raise AssertionError(
                f"the dashboard exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            return None

    return wait_until(get, timeout=START_TIMEOUT, interval=0.1, what=f"{url} to answer")  # type: ignore[no-any-return]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and the process stops gracefully and exits 0, as the worker does."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0


def test_another_host_without_a_login_is_refused_in_one_line(dsn: str) -> None:
    result = subprocess.run(
        command("--host", "0.0.0.0", "--port", str(free_port())),
        cwd=ROOT,
        env=dashboard_env(dsn),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgqueue: error:")
    assert "PGQUEUE_DASHBOARD_TOKEN" in lines[0] and "0.0.0.0" in lines[0]


def test_a_short_token_in_the_environment_is_refused(dsn: str) -> None:
    result = subprocess.run(
        command("--port", str(free_port())),
        cwd=ROOT,
        env=dashboard_env(dsn, PGQUEUE_DASHBOARD_TOKEN="short"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 2
    assert "at least 16 characters" in result.stderr


def test_another_host_with_a_token_starts_and_stops_on_sigterm(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = dashboard_env(dsn, PGQUEUE_DASHBOARD_TOKEN=TOKEN)
    with serving(["--host", "0.0.0.0", "--port", str(port)], env, log) as process:
        response = answer(process, f"http://127.0.0.1:{port}/login", log)
        assert response.status_code == 200 and "Log in" in response.text
        assert "content-security-policy" in response.headers
        assert "server" not in response.headers
        overview = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
        assert overview.status_code == 303
        assert overview.headers["location"] == "/login?next=/"
        stop(process)
    assert "login required" in log.read_text()


def test_the_default_dashboard_serves_the_overview_on_loopback(
    dsn: str, app: pgqueue.App, jobs: Jobs, tmp_path: Path
) -> None:
    params = dsn_params(dsn)
    if str(params.get("host", "")).startswith("/"):
        pytest.skip("needs a server reached over TCP")
    secret_dsn = (
        f"postgresql://{params['user']}:{PASSWORD}@{params['host']}:{params.get('port', 5432)}"
        f"/{params['dbname']}"
    )
    port = free_port()
    log = tmp_path / "dashboard.log"
    with serving(["--port", str(port)], dashboard_env(secret_dsn), log) as process:
        response = answer(process, f"http://127.0.0.1:{port}/", log)
        assert response.status_code == 200
        assert "<h1>Overview</h1>" in response.text
        assert f'href="/jobs/{jobs.failed}"' in response.text
        assert PASSWORD not in response.text
        jobs_page = httpx.get(f"http://127.0.0.1:{port}/jobs?status=failed")
        assert f'href="/jobs/{jobs.failed}"' in jobs_page.text
        for local in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}"):
            assert httpx.get(f"http://127.0.0.1:{port}/", headers={"host": local}).is_success
        stop(process)
    text = log.read_text()
    assert f"dashboard on http://127.0.0.1:{port}/" in text
    assert PASSWORD not in text


def test_without_a_login_only_requests_for_localhost_are_answered(
    dsn: str, jobs: Jobs, tmp_path: Path
) -> None:
    """A page under another name that resolves to 127.0.0.1 (DNS rebinding) reads nothing
    and does nothing; with a login, any name is served (the login guards it)."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    with serving(["--port", str(port)], dashboard_env(dsn), log) as process:
        answer(process, f"http://127.0.0.1:{port}/", log)
        for name in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", ""):
            for path in ("/", "/jobs", "/static/dashboard.js", "/queues/reports/pause"):
                response = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": name})
                assert response.status_code == 421, (name, path)
                assert "PGQUEUE_DASHBOARD_TOKEN" in response.text
                assert "content-security-policy" in response.headers
        stop(process)
    env = dashboard_env(dsn, PGQUEUE_DASHBOARD_TOKEN=TOKEN)
    with serving(["--port", str(port)], env, log) as process:
        answer(process, f"http://127.0.0.1:{port}/login", log)
        response = httpx.get(
            f"http://127.0.0.1:{port}/login", headers={"host": "dashboard.example"}
        )
        assert response.status_code == 200
        stop(process)


def test_root_path_and_read_only(
    dsn: str, conn: psycopg.Connection[Any], jobs: Jobs, tmp_path: Path
) -> None:
    """Behind a proxy that strips /pgqueue: links carry it; read-only offers no action."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    args = ["--port", str(port), "--root-path", "/pgqueue", "--read-only"]
    with serving(args, dashboard_env(dsn), log) as process:
        response = answer(process, f"http://127.0.0.1:{port}/jobs", log)
        assert response.status_code == 200
        assert f'href="/pgqueue/jobs/{jobs.failed}"' in response.text
        assert 'src="/pgqueue/static/dashboard.js"' in response.text
        assert 'method="post"' not in response.text
        overview = httpx.get(f"http://127.0.0.1:{port}/").text
        assert 'data-refresh="/pgqueue/?fragment=live"' in overview
        assert 'href="/pgqueue/queues"' in overview
        # Through a TLS proxy on this machine (trusted by default): a Secure cookie.
        proxied = httpx.get(f"http://127.0.0.1:{port}/", headers={"x-forwarded-proto": "https"})
        cookie = [part.strip().lower() for part in proxied.headers["set-cookie"].split(";")]
        assert "secure" in cookie and "path=/pgqueue/" in cookie
        css = httpx.get(f"http://127.0.0.1:{port}/static/dashboard.css")
        assert css.status_code == 200
        stop(process)
