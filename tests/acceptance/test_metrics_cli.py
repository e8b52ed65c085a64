"""`pgqueue worker --metrics-port` as a user runs it: bad input ends in one line, and the core
never needs prometheus-client."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.acceptance.helpers import APP, subprocess_env
from tests.acceptance.test_cli import UNREACHABLE_DSN, one_line_error, pgqueue
from tests.conftest import ROOT


def test_a_taken_metrics_port_stops_the_worker_before_it_starts(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pgqueue(
            "worker",
            "--app",
            APP,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            dsn=dsn,
        )
    line = one_line_error(result)
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    assert ") ready: queues=" not in result.stdout + result.stderr  # never started


def test_a_port_out_of_range_is_a_usage_error() -> None:
    result = pgqueue("worker", "--app", APP, "--metrics-port", "70000")
    assert result.returncode == 2
    assert "not a TCP port: '70000'" in result.stderr


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=subprocess_env("postgresql://postgres@127.0.0.1:1/unused"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_metrics_extra_the_error_says_what_to_install() -> None:
    # prometheus-client made unimportable, as in an install without pgqueue[metrics].
    result = _python(
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from pgqueue.cli import main\n"
        f"sys.exit(main(['worker', '--app', '{APP}', '--metrics-port', '0']))"
    )
    line = one_line_error(result)
    assert result.returncode == 2
    assert "pip install 'pgqueue[metrics]'" in line


def test_the_core_and_a_worker_without_metrics_never_import_prometheus_client() -> None:
    result = _python(
        "import sys, pgqueue, pgqueue.worker, pgqueue.cli, pgqueue.observations\n"
        "sys.exit('prometheus_client' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr


def test_exporter_bad_input_ends_in_one_line() -> None:
    missing = pgqueue("exporter")
    assert missing.returncode == 2
    assert "needs --port PORT" in one_line_error(missing)

    malformed = pgqueue("exporter", "--port", "0", "--dsn", "not a dsn==")
    assert malformed.returncode == 2
    assert "invalid DSN" in one_line_error(malformed)

    negative = pgqueue("exporter", "--port", "0", "--min-interval", "-1")
    assert negative.returncode == 2
    assert "--min-interval" in one_line_error(negative)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pgqueue(
            "exporter", "--host", "127.0.0.1", "--port", str(port), dsn=UNREACHABLE_DSN
        )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in one_line_error(result)


def test_exporter_without_the_metrics_extra_says_what_to_install() -> None:
    result = _python(
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from pgqueue.cli import main\n"
        "sys.exit(main(['exporter', '--port', '0']))"
    )
    assert result.returncode == 2
    assert "pip install 'pgqueue[metrics]'" in one_line_error(result)


def test_the_alert_rules_print_without_the_metrics_extra() -> None:
    result = _python(
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from pgqueue.cli import main\n"
        "sys.exit(main(['exporter', '--print-rules']))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Prometheus alert rules for pgqueue")
    assert "alert: PgQueueNoWorker" in result.stdout


def test_exporter_help_lists_its_options() -> None:
    result = pgqueue("exporter", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--host", "--min-interval", "--print-rules", "--dsn"):
        assert option in result.stdout
