"""A tiny chaos run (`benchmarks/chaos.py`, what `make chaos` runs in full): real workers are
killed and the database connections cut, and no job is lost, no transactional job takes effect
twice, every killed worker's jobs are claimed again and every worker stops cleanly.

How fast the rescue is depends on the machine as much as on pgqueue, so this run reports it
without holding it to a limit (`--rescue-limit 0`); `make chaos` checks the 5 s figure.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.acceptance.helpers import subprocess_env
from tests.conftest import ROOT

# Concurrency 4 keeps the three workers within the connections a shared test server has.
# The run's own --timeout and the subprocess timeout only guard against a hang.
SMOKE_ARGS = [
    *("--jobs", "300", "--kills", "2", "--cuts", "1", "--concurrency", "4"),
    *("--rescue-limit", "0", "--timeout", "400"),
]


def test_tiny_chaos_run_loses_nothing_and_runs_no_transactional_job_twice(
    server_dsn: str,
) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), *SMOKE_ARGS],
        cwd=ROOT,
        env=subprocess_env(server_dsn),
        capture_output=True,
        text=True,
        timeout=480,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "jobs enqueued: 300" in output
    assert "jobs succeeded: 300" in output
    assert "jobs lost: 0" in output
    assert "duplicate executions, transactional tasks: 0 (must be 0)" in output
    plain = re.search(r"duplicate executions, plain tasks: (\d+) \(at most (\d+):", output)
    assert plain is not None, output
    assert int(plain[1]) <= int(plain[2])
    # Every kill's jobs in flight were claimed again (a rescue that never came reads "NOT").
    assert "NOT claimed again" not in output
    assert re.search(r"slowest rescue: ([\d.]+ s|n/a \(nothing in flight\)) \(reported", output)
    assert "kills: 2 (at least 2)" in output
    assert "connection cuts: 1 (at least 1)" in output
    assert "RESULT: PASS" in output
