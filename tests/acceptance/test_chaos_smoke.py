"""Tiny chaos runs (`benchmarks/chaos.py`, what `make chaos` runs in full): real workers are
killed and the database connections cut, and no job is lost, no transactional job takes effect
twice, every killed worker's jobs are claimed again and every worker stops cleanly; with
workflows, every chord and chain ends and each callback takes effect exactly once.

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


WORKFLOW_ARGS = [
    *("--workflows", "--chords", "12", "--chord-size", "8", "--chains", "12"),
    *("--chain-length", "3", "--kills", "2", "--cuts", "1", "--concurrency", "4"),
    *("--rescue-limit", "0", "--timeout", "400"),
]


def chaos(server_dsn: str, args: list[str]) -> str:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), *args],
        cwd=ROOT,
        env=subprocess_env(server_dsn),
        capture_output=True,
        text=True,
        timeout=480,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


def test_tiny_chaos_run_loses_nothing_and_runs_no_transactional_job_twice(
    server_dsn: str,
) -> None:
    output = chaos(server_dsn, SMOKE_ARGS)
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


def test_tiny_workflow_chaos_run_ends_every_workflow_and_runs_each_callback_once(
    server_dsn: str,
) -> None:
    output = chaos(server_dsn, WORKFLOW_ARGS)
    jobs = 12 * (8 + 1) + 12 * 3
    assert f"jobs enqueued: {jobs}" in output
    assert f"jobs succeeded: {jobs}" in output
    assert "duplicate executions, transactional tasks: 0 (must be 0)" in output
    assert (
        "chords of 8 members: 12 (asked 12), 12 SUCCEEDED; callbacks that took effect exactly "
        "once: 12; with the right value: 12" in output
    )
    assert (
        "chains of 3 steps: 12 (asked 12), 12 SUCCEEDED; last steps that took effect exactly "
        "once: 12; with the right value: 12" in output
    )
    assert re.search(r"last member's outcome -> its callback's start: p50 [\d.]+ ms", output)
    assert "NOT claimed again" not in output
    assert "RESULT: PASS" in output
