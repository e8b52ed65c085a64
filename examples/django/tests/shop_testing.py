"""What the shop's tests share: the project's folder, polling with a deadline, and a real
`manage.py pgqueue_worker` subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
READY = re.compile(r"worker \S+ \(id \d+\) ready")


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {condition}")
        time.sleep(interval)


class Worker:
    """A `python manage.py pgqueue_worker` subprocess on the test database."""

    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
        env.update(DJSHOP_DATABASE_URL=dsn, PYTHONUNBUFFERED="1")
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "pgqueue_worker", *args],
                cwd=PROJECT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited early:\n{self.output()}")
            return READY.search(self.output()) is not None

        wait_until(ready, timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the worker did not stop on SIGTERM:\n{self.output()}") from None
