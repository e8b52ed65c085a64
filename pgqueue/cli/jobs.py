"""`pgqueue jobs`: list and show jobs; the actions on them (retry, cancel, delete, prune) are
registered from pgqueue.cli.actions."""

from __future__ import annotations

import argparse
import json
import shlex
from datetime import datetime
from typing import Any

from pgqueue.cli import actions
from pgqueue.cli._common import Parents, connected, format_table, print_json, when
from pgqueue.cli._show import ago, as_json, duration, error_line
from pgqueue.config import parse_duration
from pgqueue.errors import ConfigurationError

MAX_JOB_ID = 2**63 - 1
LIST_DEFAULT_LIMIT = 50


def parse_job_id(text: str, what: str = "job id") -> int:
    """A job id as the user typed it; ConfigurationError unless a whole number in range."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{what} must be a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_JOB_ID:
        raise ConfigurationError(f"{what} must be between 1 and {MAX_JOB_ID}, got {text}")
    return value


def _next_page_command(args: argparse.Namespace, before: int) -> str:
    """The command that shows the next page: this one's filters, and --before."""
    words = ["pgqueue", "jobs", "list"]
    for option in ("queue", "task", "status", "since"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", value]
    if args.limit != LIST_DEFAULT_LIMIT:
        words += ["--limit", str(args.limit)]
    words += ["--before", str(before)]
    return shlex.join(words)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from pgqueue.inspect import jobs

    statuses = jobs.parse_statuses(args.status) if args.status is not None else ()
    since = parse_duration(args.since) if args.since is not None else None
    if since is not None and since <= 0:
        raise ConfigurationError(
            f"--since takes an age > 0 (e.g. 90s, 15m, 2h), got {args.since!r}"
        )
    before = parse_job_id(args.before, "--before") if args.before is not None else None
    if not 1 <= args.limit <= jobs.MAX_LIMIT:
        raise ConfigurationError(f"--limit takes 1 to {jobs.MAX_LIMIT}, got {args.limit}")
    _, conn = connected(args)
    with conn:
        page = jobs.list_jobs(
            conn,
            queue=args.queue,
            task=args.task,
            statuses=statuses,
            since=since,
            before=before,
            limit=args.limit,
        )
    if args.json:
        print_json(as_json(page))
        return 0
    if not page.jobs:
        print("(no jobs)")
        return 0
    rows = [
        (
            job.id,
            job.queue,
            job.task_name,
            job.status,
            f"{job.attempts}/{job.max_attempts}",
            ago(job.created_at, page.at),
            ago(job.finished_at, page.at)
            if job.finished_at
            else (_running_for(job.started_at, page.at) if job.status == "running" else "-"),
            error_line({"type": job.error_type, "message": job.error_message}, 60)
            if job.error_type
            else "",
        )
        for job in page.jobs
    ]
    headers = ("id", "queue", "task", "status", "attempts", "enqueued", "ended", "error")
    print(format_table(rows, headers, right=(0, 4)))
    if page.next_before is not None:
        print(f"\nmore: {_next_page_command(args, page.next_before)}")
    return 0


def _running_for(started_at: datetime | None, now: datetime | None) -> str:
    if started_at is None or now is None:
        return "running"
    return f"running for {duration((now - started_at).total_seconds())}"


def _workflow_text(workflow_id: int) -> str:
    return f"{workflow_id} (pgqueue workflows show {workflow_id})"


def _show_text(detail: Any) -> str:
    at = detail.at
    worker = detail.worker
    lines = [
        f"job {detail.id}: {detail.task_name} {detail.status}",
        f"  queue              {detail.queue}",
        f"  priority           {detail.priority}",
        f"  args               {json.dumps(detail.args)}",
        f"  kwargs             {json.dumps(detail.kwargs)}",
        *([f"  headers            {json.dumps(detail.headers)}"] if detail.headers else []),
        *([f"  unique key         {detail.unique_key}"] if detail.unique_key is not None else []),
        *(
            [f"  concurrency key    {detail.concurrency_key}"]
            if detail.concurrency_key is not None
            else []
        ),
        *(
            [f"  workflow           {_workflow_text(detail.workflow_id)}"]
            if detail.workflow_id
            else []
        ),
        f"  attempts           {detail.attempts} of {detail.max_attempts}",
        f"  enqueued           {when(detail.created_at)} ({ago(detail.created_at, at)})",
        f"  run at             {when(detail.run_at)} ({ago(detail.run_at, at)})",
        f"  started            {when(detail.started_at)}",
        f"  finished           {when(detail.finished_at)}",
    ]
    if detail.expires_at is not None:
        lines.append(f"  expires            {when(detail.expires_at)}")
    if detail.cancel_requested_at is not None:
        lines.append(f"  cancel requested   {when(detail.cancel_requested_at)}")
    if worker is not None:
        lines.append(f"  worker             {_worker_text(worker)}")
    if detail.schedule is not None:
        schedule = detail.schedule
        tick = f"tick {when(schedule.fire_at)}" if schedule.fire_at else "run now"
        spec = schedule.spec or "removed since"
        lines.append(f"  periodic schedule  {schedule.name} ({spec}), {tick}")
    if detail.progress_at is not None:
        lines.append(
            f"  progress           {json.dumps(detail.progress)} ({ago(detail.progress_at, at)})"
        )
    if detail.status == "succeeded":
        lines.append(f"  result             {json.dumps(detail.result)}")
    if detail.error:
        lines += ["", f"error: {error_line(detail.error, 10_000)}"]
        traceback = detail.error.get("traceback") if isinstance(detail.error, dict) else None
        if traceback:
            lines += ["", str(traceback).rstrip()]
    if detail.attempt_history:
        rows = [
            (
                a.attempt,
                a.outcome,
                _worker_text(a.worker) if a.worker else "-",
                when(a.started_at),
                duration((a.ended_at - a.started_at).total_seconds())
                if a.ended_at and a.started_at
                else "-",
                error_line(a.error, 60),
            )
            for a in detail.attempt_history
        ]
        lines += ["", "attempts:"]
        lines.append(
            format_table(rows, ("#", "outcome", "worker", "started", "took", "error"), (0, 4))
        )
        if detail.attempt_history[0].attempt > 1:
            first = detail.attempt_history[0].attempt
            lines.append(f"(attempts before #{first} left no record)")
    return "\n".join(lines)


def _worker_text(worker: Any) -> str:
    if worker.name is None:
        return f"id {worker.id} (gone)"
    return f"{worker.name} (id {worker.id}, pid {worker.pid} on {worker.hostname}, {worker.state})"


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from pgqueue.inspect import jobs

    job_id = parse_job_id(args.job_id)
    _, conn = connected(args)
    with conn:
        detail = jobs.job_detail(conn, job_id)
    if args.json:
        print_json(as_json(detail))
    else:
        print(_show_text(detail))
    return 0


def register_views(sub: Any, parents: Parents) -> None:
    """`pgqueue jobs list | show`."""
    jlist = sub.add_parser(
        "list",
        parents=[parents.common, parents.app, parents.output],
        help="list jobs, newest first, with filters",
        description="Queued, running and finished jobs, newest first, a page at a time. "
        "--since keeps the jobs that entered their status within AGE: enqueued (queued), "
        "started (running) or finished. When there may be more, the last line is the "
        "command for the next page (--before the last id shown).",
    )
    jlist.add_argument("--queue", help="only jobs of this queue")
    jlist.add_argument("--task", help="only jobs of this task (its full name)")
    jlist.add_argument(
        "--status",
        metavar="S[,S]",
        help="only jobs with these statuses: waiting (workflow steps), queued, running, "
        "succeeded, failed, cancelled",
    )
    jlist.add_argument(
        "--since", metavar="AGE", help="only jobs that got there within AGE (15m, 2h, 7d)"
    )
    jlist.add_argument(
        "--limit",
        type=int,
        default=LIST_DEFAULT_LIMIT,
        metavar="N",
        help=f"jobs per page (default: {LIST_DEFAULT_LIMIT}, at most 1000)",
    )
    jlist.add_argument("--before", metavar="ID", help="only jobs with an id below ID (next page)")
    jlist.set_defaults(func=cmd_jobs_list)

    show = sub.add_parser(
        "show",
        parents=[parents.common, parents.app, parents.output],
        help="one job in full: error and traceback, attempts, worker, schedule",
        description="Every field of one job, its error with the traceback, each attempt with "
        "its worker and outcome, and the periodic schedule that made it.",
    )
    show.add_argument("job_id", metavar="ID", help="the job's id")
    show.set_defaults(func=cmd_jobs_show)


def register(sub: Any, parents: Parents) -> None:
    jobs = sub.add_parser(
        "jobs",
        help="list, show, retry, cancel and delete jobs",
        description="Jobs, queued, running and finished, by id or by filter.",
    )
    jsub = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    register_views(jsub, parents)
    actions.register_job_actions(jsub, parents)
