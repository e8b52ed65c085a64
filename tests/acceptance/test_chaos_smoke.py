"""A tiny chaos run (`benchmarks/chaos.py`, what `make chaos` runs in full): real workers are
killed and the database connections cut, and the run still passes every requirement."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.acceptance.helpers import subprocess_env
from tests.conftest import ROOT

# Concurrency 4 keeps the three workers within the connections a shared test server has.
SMOKE_ARGS = ["--jobs", "300", "--kills", "2", "--cuts", "1", "--concurrency", "4"]


def test_tiny_chaos_run_loses_nothing_and_rescues_fast(server_dsn: str) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), *SMOKE_ARGS],
        cwd=ROOT,
        env=subprocess_env(server_dsn),
        capture_output=True,
        text=True,
        timeout=240,
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
    rescue = re.search(r"slowest rescue: ([\d.]+) s \(must be under 5 s\)", output)
    assert rescue is not None, output
    assert float(rescue[1]) < 5
    assert "kills: 2 (at least 2)" in output
    assert "connection cuts: 1 (at least 1)" in output
    assert "RESULT: PASS" in output
