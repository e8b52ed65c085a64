"""Loading the user's App from a `module:attribute` path: for the CLI and the process pool's
children, which import the App the worker was started with."""

from __future__ import annotations

import importlib
import os
import sys

from pgqueue.app import App
from pgqueue.errors import ConfigurationError


def load_app(path: str | None) -> App:
    """Import `module:attribute` (default attribute `app`) and check it is a pgqueue App."""
    path = path or os.environ.get("PGQUEUE_APP")
    if not path:
        raise ConfigurationError(
            "no app given: pass --app module:attribute (e.g. --app myproject.tasks:app) "
            "or set PGQUEUE_APP"
        )
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --app {path}: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"importing {module_name!r} for --app {path} raised {type(exc).__name__}: {exc} "
            f"(run `python -c 'import {module_name}'` for the traceback)"
        ) from exc
    if not hasattr(module, attribute):
        raise ConfigurationError(
            f"--app {path}: module {module_name!r} has no attribute {attribute!r}"
        )
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"--app {path}: {module_name}.{attribute} is {type(app).__name__}, not a pgqueue.App"
        )
    return app
