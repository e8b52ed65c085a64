"""A real Prometheus server for the acceptance tests: started on a free port with a config and
data directory of its own, scraping every second; queried through its HTTP API.

Needs Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from tests.conftest import wait_until

START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """`/usr/bin/prometheus` scraping `targets` (job name -> host:port) every second."""

    def __init__(
        self, workdir: Path, targets: dict[str, Sequence[str]], rule_files: Sequence[Path] = ()
    ) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `apt-get install prometheus` (.ci/run does)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(path) for path in rule_files],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                        for job, hosts in targets.items()
                    ],
                }
            )
        )
        self.command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, timeout=START_TIMEOUT, interval=0.1, what="Prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"prometheus exited at start:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/`path`; the `data` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """An instant query: each series' value by its labels (without __name__)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {
            frozenset((k, v) for k, v in item["metric"].items() if k != "__name__"): float(
                item["value"][1]
            )
            for item in data["result"]
        }

    def value(self, expr: str) -> float | None:
        """The value of a query that yields one series (None while it yields none)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def wait_for(self, expr: str, expected: float, timeout: float = 60.0) -> None:
        """Until `expr` yields one series of value `expected`."""
        wait_until(
            lambda: self.value(expr) == expected,
            timeout=timeout,
            interval=0.25,
            what=f"Prometheus: {expr} == {expected} (last: {self.value(expr)})",
        )

    def stop(self) -> int:
        """SIGTERM, and wait for a clean exit; the exit code."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(60)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
