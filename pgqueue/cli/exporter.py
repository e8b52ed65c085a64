"""`pgqueue exporter`: serve the fleet-wide Prometheus metrics, or print the alert rules."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from pgqueue.cli._common import Parents, app_or_dsn, tcp_port
from pgqueue.errors import ConfigurationError

logger = logging.getLogger("pgqueue.exporter")


def cmd_exporter(args: argparse.Namespace) -> int:
    if args.print_rules:
        from pgqueue import alerts

        sys.stdout.write(alerts.rules_text())
        return 0
    if args.port is None:
        raise ConfigurationError("pgqueue exporter needs --port PORT (or --print-rules)")
    if args.min_interval < 0:
        raise ConfigurationError(f"--min-interval must be 0 or more, not {args.min_interval:g}")
    from pgqueue import metrics  # needs the `metrics` extra: a one-line error without it
    from pgqueue.exporter import FleetReader, exporter_registry

    app = app_or_dsn(args)
    app._connect_kwargs()  # a malformed DSN is a usage error now, not a warning per scrape
    reader = FleetReader(app, args.min_interval)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = metrics.serve(exporter_registry(reader), args.host, args.port)
    try:
        logger.info(
            "exporter serving fleet metrics on http://%s:%d/metrics (the database is read at "
            "most every %gs)",
            args.host,
            server.port,
            args.min_interval,
        )
        reader.read()  # says at once, in one line, if the database cannot be read
        stop.wait()
    finally:
        server.close()
        reader.close()
    logger.info("exporter stopped")
    return 0


def register(sub: Any, parents: Parents) -> None:
    exporter = sub.add_parser(
        "exporter",
        parents=[parents.common, parents.app],
        help="serve fleet-wide Prometheus metrics read from the database",
        description="Serve the whole fleet's gauges (jobs per queue and status, oldest ready "
        "age, paused queues, workers, overdue schedules, xmin horizon age, dead tuples of the "
        "hot table) at /metrics, read from the database when scraped, at most once per "
        "--min-interval. One exporter serves a fleet; workers serve their own counters with "
        "`pgqueue worker --metrics-port`. A database that cannot be read is reported as "
        "pgqueue_up 0; the exporter keeps running. Needs the pgqueue[metrics] extra.",
    )
    exporter.add_argument("--port", type=tcp_port, metavar="PORT", help="port to listen on")
    exporter.add_argument(
        "--host",
        default="0.0.0.0",
        metavar="HOST",
        help="address to listen on (default: 0.0.0.0, every interface, so that Prometheus on "
        "another host or container can scrape it; 127.0.0.1 keeps it local)",
    )
    exporter.add_argument(
        "--min-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="read the database at most this often; scrapes in between get the last reading "
        "(default: 5)",
    )
    exporter.add_argument(
        "--print-rules",
        action="store_true",
        help="print pgqueue's Prometheus alert rules (YAML, for rule_files) and exit",
    )
    exporter.set_defaults(func=cmd_exporter)
