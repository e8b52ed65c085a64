"""The engine never imports an optional integration's library: `import pgqueue`, a worker and
the CLI start without OpenTelemetry or the dashboard's web stack (or with them installed,
without paying for their import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import sys
import pgqueue, pgqueue.worker, pgqueue.cli, pgqueue.hooks, pgqueue.execute
import pgqueue.process_pool, pgqueue.enqueue_many, pgqueue.testing
pgqueue.cli.build_parser()  # every command's options, `pgqueue dashboard`'s included
loaded = sorted(
    name for name in sys.modules
    for library in sys.argv[1:] if name == library or name.startswith(library + ".")
)
print(",".join(loaded))
"""


@pytest.mark.parametrize(
    "libraries",
    [("opentelemetry",), ("starlette", "jinja2", "uvicorn", "pgqueue.dashboard")],
    ids=["opentelemetry", "dashboard"],
)
def test_pgqueue_its_worker_and_its_cli_never_import_an_optional_library(
    libraries: tuple[str, ...],
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *libraries],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
