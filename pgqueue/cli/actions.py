"""The commands that change jobs and queues: `pgqueue jobs retry | cancel | delete | prune` and
`pgqueue queues pause | resume`. Each is a thin shell over pgqueue.admin (prune over
pgqueue.maintenance): it prints one line per job id (what was done on stdout; an id not found
or in the wrong state on stderr), or JSON with `--json`, and exits 1 when an id was not found
or refused."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Sequence
from typing import Any

from pgqueue import admin
from pgqueue.admin import JobResult
from pgqueue.cli._common import EXIT_ERROR, Parents, app_or_dsn, connected, print_json, when
from pgqueue.config import parse_duration
from pgqueue.errors import ConfigurationError

# Bulk retries print their ids on the summary line up to this many.
IDS_SHOWN = 20


def cmd_prune(args: argparse.Namespace) -> int:
    from pgqueue.maintenance import FINISHED, prune_finished_jobs_sync
    from pgqueue.revisions import check_schema

    older_than = parse_duration(args.older_than)
    statuses = tuple(s.strip() for s in args.status.split(",") if s.strip())
    bad = [s for s in statuses if s not in FINISHED]
    if bad or not statuses:
        raise ConfigurationError(
            f"--status takes finished statuses ({', '.join(FINISHED)}), got {args.status!r}"
        )
    app = app_or_dsn(args)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
        deleted = prune_finished_jobs_sync(conn, older_than, statuses)
    if args.json:
        print_json({"deleted": deleted, "older_than_seconds": older_than, "statuses": statuses})
    else:
        print(f"deleted {deleted} job(s) finished more than {args.older_than} ago")
    return 0


def _job_ids(values: Sequence[str]) -> list[int]:
    """The JOB_ID arguments as ints; anything else is a usage error (one line, exit 2)."""
    ids = []
    for value in values:
        try:
            ids.append(int(value.strip()))
        except ValueError:
            raise ConfigurationError(f"a job id is a whole number, got {value!r}") from None
    return ids


def _report(
    results: list[JobResult],
    done: dict[str, str],
    refused: dict[str, str],
    as_json: bool,
    unchanged: str = "{status}, nothing to do",
) -> int:
    """Print one line per job (`done` and `refused` map a status to what to say; a job in
    another state is left `unchanged`), or the results as JSON; the exit code: 1 if a job
    was not found or refused."""
    failing = [
        r
        for r in results
        if r.result == "not_found" or (r.result == "wrong_state" and r.status in refused)
    ]
    if as_json:
        print_json([r.as_dict() for r in results])
        return EXIT_ERROR if failing else 0
    for r in results:
        if r.result == "not_found":
            print(
                f"job {r.id}: no such job (never enqueued, or pruned or deleted)", file=sys.stderr
            )
        elif r.result == "done":
            print(f"job {r.id}: {done[r.status or '']}")
        elif r.status in refused:
            print(f"job {r.id}: {refused[r.status]}", file=sys.stderr)
        else:
            print(f"job {r.id}: {unchanged.format(status=r.status)}")
    return EXIT_ERROR if failing else 0


RETRIED = {"queued": "queued to run again (its earlier attempts are kept in its history)"}
NOT_RETRIED = {
    "waiting": "waiting for the workflow steps before it, not retried (only failed or "
    "cancelled jobs are)",
    "queued": "still queued, not retried (only failed or cancelled jobs are)",
    "running": "still running, not retried (only failed or cancelled jobs are)",
    "succeeded": "succeeded, not retried (only failed or cancelled jobs are; enqueue a new job "
    "to run it again)",
}


def cmd_retry(args: argparse.Namespace) -> int:
    ids = _job_ids(args.job_ids)
    filters = {"--task": args.task, "--queue": args.queue, "--since": args.since}
    if args.failed and ids:
        raise ConfigurationError("give job ids or --failed, not both")
    if not args.failed:
        if not ids:
            raise ConfigurationError("give the ids of the jobs to retry, or --failed")
        given = [name for name, value in filters.items() if value is not None]
        if given:
            raise ConfigurationError(f"{', '.join(given)}: only with --failed")
    since = parse_duration(args.since) if args.since is not None else None
    if since is not None and since <= 0:
        raise ConfigurationError(f"--since takes a positive age, got {args.since!r}")
    _, conn = connected(args)
    with conn:
        if not args.failed:
            return _report(admin.retry(conn, ids), RETRIED, NOT_RETRIED, args.json)
        results = admin.retry_failed(conn, task=args.task, queue=args.queue, since=since)
    if args.json:
        print_json([r.as_dict() for r in results])
        return 0
    retried = [r.id for r in results]
    if not retried:
        print("no failed job matches: nothing retried")
    elif len(retried) <= IDS_SHOWN:
        shown = ", ".join(str(i) for i in retried)
        print(f"queued {len(retried)} failed job(s) to run again: {shown}")
    else:
        print(
            f"queued {len(retried)} failed job(s) to run again (ids {retried[0]} to "
            f"{retried[-1]}; --json lists them)"
        )
    return 0


CANCELLED = {
    "cancelled": "cancelled",
    "running": "cancellation requested from its worker",
}


def cmd_cancel(args: argparse.Namespace) -> int:
    ids = _job_ids(args.job_ids)
    _, conn = connected(args)
    with conn:
        results = admin.cancel(conn, ids, args.reason)
    # A job that has finished is not refused: it is not running either way.
    unchanged = "already finished ({status}), nothing to cancel"
    return _report(results, CANCELLED, {}, args.json, unchanged)


DELETED = {status: f"deleted ({status})" for status in ("succeeded", "failed", "cancelled")}
NOT_DELETED = {
    "waiting": "waiting for the workflow steps before it, not deleted (only finished jobs "
    "are; cancel it first)",
    "queued": "still queued, not deleted (only finished jobs are; cancel it first)",
    "running": "still running, not deleted (only finished jobs are; cancel it first)",
}


def cmd_delete(args: argparse.Namespace) -> int:
    ids = _job_ids(args.job_ids)
    _, conn = connected(args)
    with conn:
        results = admin.delete(conn, ids)
    return _report(results, DELETED, NOT_DELETED, args.json)


def _operator() -> str:
    """Who pauses a queue, by default: user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


UNKNOWN_QUEUE = (
    "no worker serves it now or did in the last day, no job waits in it, and no schedule "
    "fires into it"
)


def cmd_pause(args: argparse.Namespace) -> int:
    _, conn = connected(args)
    with conn:
        result = admin.pause(conn, args.name, by=args.by or _operator())
    if args.json:
        print_json(result.as_dict())
        return 0
    since = f"since {when(result.paused_at)}, by {result.paused_by or 'unknown'}"
    if result.changed:
        print(
            f"queue {result.queue!r} paused: no worker starts a new job of it until "
            f"`pgqueue queues resume {result.queue}` (running jobs finish; enqueueing goes on)"
        )
    else:
        print(f"queue {result.queue!r} was paused already ({since})")
    if not result.known:
        print(
            f"pgqueue: warning: queue {result.queue!r} is not known yet ({UNKNOWN_QUEUE}); "
            "it is paused all the same",
            file=sys.stderr,
        )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _, conn = connected(args)
    with conn:
        result = admin.resume(conn, args.name)
    if args.json:
        print_json(result.as_dict())
        return 0 if result.known else EXIT_ERROR
    if result.changed:
        print(f"queue {result.queue!r} resumed: its workers were woken")
    elif result.known:
        print(f"queue {result.queue!r} is not paused: nothing to resume")
    else:
        print(f"queue {result.queue!r}: no such queue ({UNKNOWN_QUEUE})", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _ids_argument(parser: argparse.ArgumentParser, nargs: str = "+") -> None:
    parser.add_argument("job_ids", nargs=nargs, metavar="JOB_ID", help="job ids")


def register_job_actions(sub: Any, parents: Parents) -> None:
    """`pgqueue jobs retry | cancel | delete | prune`."""
    retry = sub.add_parser(
        "retry",
        parents=[parents.common, parents.app, parents.output],
        help="run failed or cancelled jobs again",
        description="Run failed or cancelled jobs again, under the same ids: each goes back "
        "to the queue due now, with no attempt counted; the attempt that ended it is kept in "
        "its history (`pgqueue jobs show ID`). Give job ids, or --failed for every failed job "
        "(of --task, in --queue, finished within --since). Jobs that succeeded are not retried.",
    )
    _ids_argument(retry, nargs="*")
    retry.add_argument("--failed", action="store_true", help="retry every failed job")
    retry.add_argument("--task", help="with --failed: only jobs of this task")
    retry.add_argument("--queue", help="with --failed: only jobs of this queue")
    retry.add_argument(
        "--since", metavar="AGE", help="with --failed: only jobs that failed within AGE (e.g. 2h)"
    )
    retry.set_defaults(func=cmd_retry)

    cancel = sub.add_parser(
        "cancel",
        parents=[parents.common, parents.app, parents.output],
        help="cancel jobs by id",
        description="A queued job ends CANCELLED at once; a running job's worker is told to "
        "cancel it (async tasks are cancelled, sync tasks see the request in their context). "
        "A job that has finished is left as it is.",
    )
    _ids_argument(cancel)
    cancel.add_argument("--reason", default="cancelled on request", help="stored as the error")
    cancel.set_defaults(func=cmd_cancel)

    delete = sub.add_parser(
        "delete",
        parents=[parents.common, parents.app, parents.output],
        help="delete finished jobs by id",
        description="Delete finished jobs (succeeded, failed or cancelled) by id. A queued or "
        "running job is refused: cancel it first.",
    )
    _ids_argument(delete)
    delete.set_defaults(func=cmd_delete)

    prune = sub.add_parser(
        "prune",
        parents=[parents.common, parents.app, parents.output],
        help="delete old finished jobs",
        description="Delete finished jobs older than --older-than, in batches. Workers also "
        "do this on their own (see `pgqueue worker --retention`).",
    )
    prune.add_argument(
        "--older-than", default="7d", help="age of the finished jobs to delete (default: 7d)"
    )
    prune.add_argument(
        "--status",
        default="succeeded,failed,cancelled",
        help="which finished statuses to delete (default: succeeded,failed,cancelled)",
    )
    prune.set_defaults(func=cmd_prune)


def register_queue_actions(sub: Any, parents: Parents) -> None:
    """`pgqueue queues pause | resume NAME`."""
    pause = sub.add_parser(
        "pause",
        parents=[parents.common, parents.app, parents.output],
        help="stop every worker starting jobs of a queue",
        description="Pause a queue fleet-wide: once this returns, no worker starts a new job "
        "of it (running jobs finish). Enqueueing and periodic ticks go on; the pause "
        "survives worker restarts, until `pgqueue queues resume NAME`. A queue no worker knows "
        "yet may be paused (before a deploy).",
    )
    pause.add_argument("name", metavar="NAME", help="the queue")
    pause.add_argument(
        "--by", metavar="WHO", help="who pauses it, recorded with the pause (default: user@host)"
    )
    pause.set_defaults(func=cmd_pause)

    resume = sub.add_parser(
        "resume",
        parents=[parents.common, parents.app, parents.output],
        help="let workers start jobs of a paused queue again",
        description="Resume a paused queue: its workers are woken at once (by NOTIFY) and "
        "start its jobs.",
    )
    resume.add_argument("name", metavar="NAME", help="the queue")
    resume.set_defaults(func=cmd_resume)
