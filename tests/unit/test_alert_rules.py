"""The shipped alert rules are valid Prometheus rules, and each fires where it should and not
where it should not (`promtool test rules` on tests/unit/alerts/pgqueue.rules.test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from pgqueue import alerts

HERE = Path(__file__).resolve().parent
RULES = Path(str(resources.files("pgqueue.alerts").joinpath(alerts.RULES_FILE)))
RULE_TESTS = HERE / "alerts" / "pgqueue.rules.test.yml"


def promtool(*args: str) -> str:
    """Run promtool; fail with its output unless it succeeds."""
    path = shutil.which("promtool")
    assert path, "promtool is missing: `apt-get install prometheus` (.ci/run installs it)"
    result = subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=120, cwd=RULE_TESTS.parent
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_the_shipped_rules_are_valid() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", str(RULES))


def test_each_alert_fires_when_it_should_and_not_otherwise() -> None:
    promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_test() -> None:
    rules = RULES.read_text()
    tests = RULE_TESTS.read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(names) == 8
    for name in names:
        assert f"alertname: {name}" in tests, f"{name} has no promtool test"


def test_the_rules_file_tested_is_the_one_shipped() -> None:
    assert alerts.rules_text() == RULES.read_text()
    assert "../../../pgqueue/alerts/pgqueue.rules.yml" in RULE_TESTS.read_text()
