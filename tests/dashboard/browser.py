"""What the browser tests drive: a real `pgqueue dashboard` process, Debian's chromium, and a
watch on each page for what a person would notice (a JavaScript error, a Content-Security-
Policy violation, an unexpected dialog).

Chromium is the system's (`apt-get install chromium`), driven by the `playwright` package
through `executable_path`: no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from tests.acceptance.helpers import READY_TIMEOUT, subprocess_env
from tests.acceptance.prometheus import free_port
from tests.conftest import ROOT, wait_until

CHROMIUM_MISSING = (
    "the dashboard's browser tests need Debian's chromium: apt-get install chromium "
    "(CI's .ci/run installs it)"
)


def chromium_path() -> str:
    """The system's chromium; without it the tests fail in CI and are skipped elsewhere."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(CHROMIUM_MISSING)
        pytest.skip(CHROMIUM_MISSING)
    return found


class DashboardProcess:
    """`pgqueue dashboard` on a free port of 127.0.0.1, its output in `log_path`."""

    def __init__(
        self, dsn: str, log_path: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "pgqueue", "dashboard", "--port", str(self.port)]
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env=subprocess_env(dsn, **env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> DashboardProcess:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the dashboard exited before it answered:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/static/favicon.svg", timeout=5):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answers, timeout=READY_TIMEOUT, interval=0.1, what="the dashboard to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._log.close()


class PageWatch:
    """What went wrong on a page while a test drove it: console errors (JavaScript errors
    and CSP violations show there), uncaught exceptions, and dialogs other than the confirm
    of an action's button (which is accepted, as a person would)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.confirms: list[str] = []
        self._allowed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught on {page.url}: {error}"))
        page.on("dialog", self._dialog)

    def allow(self, text: str) -> None:
        """Console errors containing `text` are expected by the test (a 403 it asks for)."""
        self._allowed.append(text)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(a in message.text for a in self._allowed):
            where = message.location.get("url") or self.page.url
            self.problems.append(f"console error from {where}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        if dialog.type == "confirm":
            self.confirms.append(dialog.message)
            dialog.accept()
        else:
            self.problems.append(f"{dialog.type} dialog on {self.page.url}: {dialog.message}")
            with contextlib.suppress(Exception):
                dialog.dismiss()


def wait_for_live_refresh(page: Any, timeout_ms: float = 20_000) -> None:
    """Until dashboard.js has swapped in a fresh copy of the page's live part."""
    before = page.get_attribute("#live", "data-updated")
    page.wait_for_function(
        "before => document.querySelector('#live').getAttribute('data-updated') !== before",
        arg=before,
        timeout=timeout_ms,
    )
