"""Each extra from a fresh virtualenv: pgqueue built as a wheel and installed with that extra
alone (and the tools its example's tests need), no other framework importable, and the
example's own tests run there against the suite's PostgreSQL.

That is what a user of the extra gets: if the wheel left out a file (the migrations), if the
extra missed a dependency, or if the integration leaned on something only the development
environment has, the example's tests fail here.

The virtualenvs are kept under .venv-extras/<extra> between runs. One is made again when what
it was installed from changes (pyproject.toml, the test tools, the interpreter); when only
pgqueue's sources change, a new wheel of pgqueue alone replaces the old one. A clean checkout,
as in CI, builds each from nothing.

To cover a new extra, add its row to EXTRAS.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

VENVS = ROOT / ".venv-extras"
PIP_TIMEOUT = 900.0
TESTS_TIMEOUT = 600.0


@dataclass(frozen=True)
class Extra:
    """One extra and the example that shows it: a row of EXTRAS.

    `imports` are the top-level modules the extra brings (its framework). Its virtualenv must
    import each of them, and none of the modules other rows bring as their own (all their
    `imports` but the `shared` ones): a test that passes there does not lean on another
    framework. The example's directory holds the pytest.ini its tests run with (`-c`, so the
    repository's own pytest settings stay out) and their tests/.
    """

    name: str  # as in `pip install 'pgqueue[name]'`
    example: str  # the example's directory, from the repository's root
    imports: tuple[str, ...]
    test_tools: tuple[str, ...] = ("pytest>=8",)  # installed beside it, for the tests alone
    python: tuple[int, int] = (3, 10)  # the oldest Python the extra runs on
    # Modules of `imports` that other rows' virtualenvs may import too, because their own
    # frameworks bring them (FastAPI brings Starlette, Flask brings Jinja2, and FastAPI's
    # dependencies the OpenTelemetry API). The others are this extra's alone.
    shared: tuple[str, ...] = ()
    # The other extras its example needs, installed with it: their rows' imports then belong
    # to this virtualenv too.
    with_extras: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """What goes between the brackets of `pgqueue[...]`."""
        return ",".join((self.name, *self.with_extras))


EXTRAS = [
    Extra("flask", "examples/flask", imports=("flask", "flask_sqlalchemy")),
    Extra(
        "fastapi",
        "examples/fastapi",
        imports=("fastapi",),
        test_tools=("pytest>=8", "httpx>=0.27"),  # the ASGI test client; anyio comes with it
    ),
    Extra(
        "opentelemetry",
        "examples/opentelemetry",
        imports=("opentelemetry",),
        test_tools=("pytest>=8", "opentelemetry-sdk>=1.20"),  # the in-memory span exporter
        shared=("opentelemetry",),
    ),
    # The dashboard mounted in a Starlette site; uvicorn is the one module no other row brings.
    Extra(
        "dashboard",
        "examples/dashboard",
        imports=("jinja2", "starlette", "uvicorn"),
        test_tools=("pytest>=8", "httpx>=0.27"),  # the ASGI test client
        shared=("jinja2", "starlette"),
    ),
    # Django 6 needs Python 3.12 or newer. Its example serves the dashboard from asgi.py.
    Extra(
        "django",
        "examples/django",
        imports=("django",),
        test_tools=("pytest>=8", "pytest-django>=4.9", "httpx>=0.27"),
        python=(3, 12),
        with_extras=("dashboard",),
    ),
]

# Settings of the suite's own environment that must not reach the example's tests.
_NOT_PASSED_ON = (
    "PGQUEUE_DSN", "PGQUEUE_TEST_DSN", "DATABASE_URL", "PGQUEUE_APP", "PGQUEUE_HOME",
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
)  # fmt: skip

_PROBE = """
import importlib.util, json, sys
import pgqueue
from pgqueue import migrate
print(json.dumps({
    "pgqueue": pgqueue.__file__,
    "migrations": str(migrate.migrations_path()),
    "importable": [name for name in sys.argv[1:] if importlib.util.find_spec(name)],
}))
"""


def run(
    command: list[str],
    what: str,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run `command`; its output, or a failure that shows the command and all it printed."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{what}: not finished after {timeout:.0f}s: {' '.join(command)}\n"
            f"--- stdout\n{exc.stdout}\n--- stderr\n{exc.stderr}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {done.returncode}): {' '.join(command)}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}",
            pytrace=False,
        )
    return str(done.stdout)


def python_version(executable: str) -> tuple[int, int] | None:
    """The version of the Python at `executable` if it runs and can make a virtualenv."""
    try:
        done = subprocess.run(
            [executable, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except OSError:
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def interpreter(extra: Extra) -> str:
    """This suite's Python if it is recent enough for the extra; else the oldest that is,
    from `python3.X` on PATH or a pyenv installation."""
    if sys.version_info[:2] >= extra.python:
        return sys.executable
    candidates = [
        *(shutil.which(f"python3.{minor}") for minor in range(extra.python[1], 20)),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python3"))),
    ]
    found = {}
    for candidate in filter(None, candidates):
        version = python_version(candidate)
        if version is not None and version >= extra.python:
            found.setdefault(version, candidate)
    if not found:
        wanted = "{}.{}".format(*extra.python)
        pytest.fail(
            f"the {extra.name} extra needs Python {wanted} or newer, and none was found: put "
            f"python{wanted} on PATH (or install it with pyenv) and run the tests again",
            pytrace=False,
        )
    return found[min(found)]


def digest(*parts: bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(len(part).to_bytes(8, "big") + part)
    return hashed.hexdigest()


def sources_digest() -> str:
    """What pgqueue's wheel is built from."""
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for top in ("pgqueue", "migrations"):
        files += sorted(
            path
            for path in (ROOT / top).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        )
    return digest(
        *(part for f in files for part in (str(f.relative_to(ROOT)).encode(), f.read_bytes()))
    )


def prepared_venv(extra: Extra) -> Path:
    """.venv-extras/<extra>, up to date: pgqueue's wheel installed with its extra alone. Two
    test runs at once (CI runs the suite on two databases side by side) take turns."""
    VENVS.mkdir(exist_ok=True)
    with open(VENVS / f".{extra.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepared_venv(extra)


def _prepared_venv(extra: Extra) -> Path:
    venv = VENVS / extra.name
    python = interpreter(extra)
    environment = digest(
        (ROOT / "pyproject.toml").read_bytes(),
        json.dumps([extra.requirement, extra.test_tools, python, python_version(python)]).encode(),
    )
    sources = sources_digest()
    stamp_path = venv / "pgqueue-extras.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    if stamp.get("environment") != environment:
        shutil.rmtree(venv, ignore_errors=True)
        run([python, "-m", "venv", str(venv)], f"making {venv}", 300)
        # Not editable: pip builds the wheel a user would download, and installs it.
        run([*pip, f"{ROOT}[{extra.requirement}]", *extra.test_tools], "pip install", PIP_TIMEOUT)
    elif stamp.get("pgqueue") != sources:
        run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], "pip install pgqueue", PIP_TIMEOUT)
    else:
        return venv
    stamp_path.write_text(json.dumps({"environment": environment, "pgqueue": sources}))
    return venv


def expected_imports(extra: Extra) -> tuple[list[str], list[str]]:
    """What the extra's virtualenv must import (its rows' imports, those of `with_extras`
    included), and the modules the probe looks for: those, and every row's own."""
    installed = [row for row in EXTRAS if row.name in (extra.name, *extra.with_extras)]
    expected = {name for row in installed for name in row.imports}
    owned = {name for row in EXTRAS for name in row.imports if name not in row.shared}
    return sorted(expected), sorted(expected | owned)


def example_env(venv: Path, server_dsn: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _NOT_PASSED_ON}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PGQUEUE_TEST_DSN"] = server_dsn
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout(PIP_TIMEOUT + TESTS_TIMEOUT + 120)
@pytest.mark.parametrize("extra", EXTRAS, ids=[extra.name for extra in EXTRAS])
def test_example_passes_in_a_fresh_virtualenv_with_only_its_extra(
    extra: Extra, server_dsn: str
) -> None:
    example = ROOT / extra.example
    started = time.monotonic()
    venv = prepared_venv(extra)
    built = time.monotonic()
    python = str(venv / "bin" / "python")
    env = example_env(venv, server_dsn)

    expected, frameworks = expected_imports(extra)
    probe = json.loads(
        run([python, "-c", _PROBE, *frameworks], "importing pgqueue", 120, cwd=example, env=env)
    )
    # The wheel's pgqueue, migrations included, not the source tree beside the example.
    assert Path(probe["pgqueue"]).is_relative_to(venv), probe
    assert Path(probe["migrations"]).is_relative_to(venv), probe
    assert probe["importable"] == expected, (
        f"the {extra.name} virtualenv should import {expected} of {frameworks}, "
        f"and imports {probe['importable']}"
    )

    output = run(
        [python, "-m", "pytest", "-c", str(example / "pytest.ini"), "--rootdir", str(example),
         "-p", "no:cacheprovider", "-q"],
        f"the {extra.name} example's tests", TESTS_TIMEOUT, cwd=example, env=env,
    )  # fmt: skip
    finished = time.monotonic()
    print(
        f"{extra.name}: virtualenv {built - started:.1f}s, example's tests "
        f"{finished - built:.1f}s\n{output}"
    )
    assert " passed" in output and "skipped" not in output, output
