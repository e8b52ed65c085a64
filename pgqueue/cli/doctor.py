"""`pgqueue doctor`: check the database under the queue and the fleet's rows, print PASS / WARN /
FAIL per check with what to do, and exit 1 if any check failed."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from typing import Any

from pgqueue.cli._common import EXIT_ERROR, Parents, app_or_dsn, print_json
from pgqueue.config import parse_duration


def _render(report: Any, width: int) -> str:
    from pgqueue.doctor import Level

    name_width = max(len(f.check) for f in report.findings)
    indent = " " * (6 + name_width + 2)
    lines: list[str] = []
    for finding in report.findings:
        head = f"{finding.level.value:<4}  {finding.check:<{name_width}}  "
        lines += textwrap.wrap(
            finding.found, width, initial_indent=head, subsequent_indent=indent
        ) or [head.rstrip()]
        if finding.advice and finding.level is not Level.PASS:
            lines += textwrap.wrap(
                finding.advice,
                width,
                initial_indent=indent + "-> ",
                subsequent_indent=indent + "   ",
            )
    if report.not_run:
        lines.append(f"not run: {', '.join(report.not_run)} (pgqueue's tables are missing)")
    counts = {level: sum(f.level is level for f in report.findings) for level in Level}
    lines.append(
        f"{len(report.findings)} checks: {counts[Level.PASS]} passed, "
        f"{counts[Level.WARN]} warned, {counts[Level.FAIL]} failed"
    )
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from pgqueue import doctor

    thresholds = doctor.Thresholds(
        xmin_warn=parse_duration(args.xmin_warn),
        xmin_fail=parse_duration(args.xmin_fail),
        running_warn=parse_duration(args.running_warn),
        overrun_grace=parse_duration(args.overrun_grace),
        heartbeat_timeout=parse_duration(args.heartbeat_timeout),
        schedule_warn=parse_duration(args.schedule_warn),
    )
    app = app_or_dsn(args)
    given_app = bool(args.app or os.environ.get("PGQUEUE_APP"))
    time_limits = doctor.time_limits_of(app.tasks) if given_app else None
    with app.connect(autocommit=True) as conn:
        report = doctor.run_checks(
            conn,
            # What must not be pooled per transaction is the workers' session-bound
            # connection: the listen DSN (the DSN itself, unless one is set).
            lambda: app.connect_listen(autocommit=True),
            time_limits=time_limits,
            thresholds=thresholds,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        width = min(shutil.get_terminal_size((100, 24)).columns, 120) - 1
        print(_render(report, width))
    sys.stdout.flush()
    return EXIT_ERROR if report.level is doctor.Level.FAIL else 0


def register(sub: Any, parents: Parents) -> None:
    from pgqueue.doctor import Thresholds

    defaults = Thresholds()
    doctor = sub.add_parser(
        "doctor",
        parents=[parents.common, parents.app, parents.output],
        help="check the database and the fleet for what makes a queue slow or stuck",
        description="Checks, each PASS, WARN or FAIL with what it means and what to do: schema "
        "at head, server version, a transaction pooler in the way, connections, the xmin "
        "horizon, the hot table's dead rows, size and autovacuum, long-running jobs, silent "
        "workers, overdue schedules, the NOTIFY queue. Exit status 1 if any check failed. "
        "Durations: seconds, or a number with s, m, h or d.",
    )

    def seconds(value: float) -> str:
        return f"{value:g}s"

    doctor.add_argument(
        "--xmin-warn",
        metavar="DURATION",
        default=seconds(defaults.xmin_warn),
        help="warn when a transaction has held the xmin horizon this long (default: 5m)",
    )
    doctor.add_argument(
        "--xmin-fail",
        metavar="DURATION",
        default=seconds(defaults.xmin_fail),
        help="fail when a transaction has held the xmin horizon this long (default: 1h)",
    )
    doctor.add_argument(
        "--running-warn",
        metavar="DURATION",
        default=seconds(defaults.running_warn),
        help="warn about jobs running this long, whatever their task (default: 1h)",
    )
    doctor.add_argument(
        "--overrun-grace",
        metavar="DURATION",
        default=seconds(defaults.overrun_grace),
        help="fail when a job runs this long past its task's timeout; needs --app (default: 30s)",
    )
    doctor.add_argument(
        "--heartbeat-timeout",
        metavar="DURATION",
        default=seconds(defaults.heartbeat_timeout),
        help="report workers silent this long; use the workers' own --heartbeat-timeout "
        "(default: %(default)s)",
    )
    doctor.add_argument(
        "--schedule-warn",
        metavar="DURATION",
        default=seconds(defaults.schedule_warn),
        help="report periodic schedules this late (default: 1m; they fail after 1h)",
    )
    doctor.set_defaults(func=cmd_doctor)
