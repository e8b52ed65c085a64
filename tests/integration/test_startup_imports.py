"""A worker imports what it runs: `from pgqueue import App` and `pgqueue worker --app X` up to
the worker's ready signal load neither the dashboard's stack, nor SQLAlchemy or alembic, nor
the modules of the other commands, nor what only some apps use (croniter for cron schedules,
multiprocessing for --pool process, the canvas and workflows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

APP = '''
from pgqueue import App

app = App()


@app.task
def noop() -> None:
    """Does nothing."""
'''

# Runs the worker command in-process and prints the loaded modules once it is ready.
PROBE = """
import sys

from pgqueue import signals
from pgqueue.cli import main


@signals.worker_ready.connect
def ready(signal, sender, **kwargs):
    print(" ".join(sorted(sys.modules)), flush=True)
    sender.request_stop()


sys.exit(main(["worker", "--app", "startup_app:app", "--dsn", sys.argv[1]]))
"""

NEVER = (
    "sqlalchemy",
    "alembic",
    "starlette",
    "jinja2",
    "uvicorn",
    "pgqueue.dashboard",
    "pgqueue.migrate",
    "pgqueue.doctor",
    "pgqueue.admin",
    "pgqueue.canvas",
    "pgqueue.workflows",
    "pgqueue.process_pool",
    "pgqueue.inspect",  # the health checks: the pooling probe is in pgqueue._pooling
    "croniter",
    "multiprocessing",
)


def _loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for p in prefixes if m == p or m.startswith(p + "."))


def test_a_worker_imports_no_other_command_and_no_optional_machinery(
    dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "startup_app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, dsn],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "pgqueue.worker" in modules  # the probe did run up to the ready signal
    assert _loaded(modules, NEVER) == []
    commands = {m for m in modules if m.startswith("pgqueue.cli.")}
    assert commands == {"pgqueue.cli._common", "pgqueue.cli.worker"}


def test_import_pgqueue_alone_loads_only_its_version() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pgqueue; print(' '.join(m for m in sys.modules if 'pgqueue' in m))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["pgqueue", "pgqueue._version"]
