"""The Prometheus alert rules shipped with pgqueue (`pgqueue.rules.yml` beside this module).

`pgqueue exporter --print-rules` prints them; from Python, `rules_text()`, or the file itself
at `importlib.resources.files("pgqueue.alerts") / "pgqueue.rules.yml"`.
"""

from __future__ import annotations

from importlib import resources

RULES_FILE = "pgqueue.rules.yml"


def rules_text() -> str:
    """The alert rules file, as text (YAML for Prometheus' `rule_files`)."""
    return resources.files(__name__).joinpath(RULES_FILE).read_text(encoding="utf-8")
