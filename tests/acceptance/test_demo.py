"""`examples/demo.py`, run as `make demo` runs it, must keep working."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

from tests.acceptance.helpers import subprocess_env
from tests.conftest import ROOT

DEMO_TIMEOUT = 180.0
RESULT_LINE = re.compile(r"^\s+job\s+\d+ (tasks\.\w+)\s+succeeded attempts=(\d)\s+-> (.+)$")


def test_demo_runs_every_job_and_stops_its_worker_cleanly(dsn: str) -> None:
    # Its own session, so that the demo's worker (a grandchild) can be killed with it.
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=ROOT,
        env=subprocess_env(dsn),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        demo.wait(30)
    print(stdout)
    print(stderr)

    assert demo.returncode == 0, stderr
    results = [m.groups() for m in map(RESULT_LINE.match, stdout.splitlines()) if m]
    assert sorted((task, attempts) for task, attempts, _ in results) == sorted(
        [
            ("tasks.charge_order", "1"),
            ("tasks.send_receipt", "1"),
            ("tasks.score_order", "1"),
            ("tasks.call_flaky_service", "2"),
        ]
        * 2
    )
    values = [value for _, _, value in results]
    assert "receipt for order 1: 2 x teapot" in values
    assert "receipt for order 2: 1 x kettle" in values
    assert sum("confirmed on attempt 2" in value for value in values) == 2
    assert "a rolled-back order left no job behind" in stdout
    assert "charges per order: order 1: 1, order 2: 1" in stdout
    assert "worker stopped cleanly (exit code 0)" in stdout
    assert "Traceback" not in stderr
