"""The engine never imports an optional integration's library: `import pgqueue` and a worker
start without OpenTelemetry (or with it installed, without paying for its import)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
import pgqueue, pgqueue.worker, pgqueue.cli, pgqueue.hooks, pgqueue.execute
import pgqueue.process_pool, pgqueue.enqueue_many, pgqueue.testing
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
print(",".join(loaded))
"""


def test_pgqueue_and_its_worker_never_import_opentelemetry() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
