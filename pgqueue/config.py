"""Settings: one frozen object per concern, validated once when it is made.

`resolve_dsn()` decides which database an App talks to: the argument, else `PGQUEUE_DSN`,
else `DATABASE_URL`, else None (meaning: the embedded development database);
`hide_password()` keeps its password out of every message that quotes it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pgqueue.errors import ConfigurationError

if TYPE_CHECKING:
    from pgqueue.tasks import Task

DEFAULT_QUEUE = "default"
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


def resolve_dsn(dsn: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the DSN to use, normalised for psycopg, or None for the embedded database."""
    env = os.environ if environ is None else environ
    for candidate in (dsn, env.get("PGQUEUE_DSN"), env.get("DATABASE_URL")):
        if candidate:
            return normalize_dsn(candidate)
    return None


def resolve_transaction_pooling(
    value: bool | None, environ: Mapping[str, str] | None = None
) -> bool:
    """The argument, else `PGQUEUE_TRANSACTION_POOLING` (1/true/yes or 0/false/no), else False."""
    if value is not None:
        return bool(value)
    env = os.environ if environ is None else environ
    raw = env.get("PGQUEUE_TRANSACTION_POOLING", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(
        f"PGQUEUE_TRANSACTION_POOLING must be 1 or 0, got {env['PGQUEUE_TRANSACTION_POOLING']!r}"
    )


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as well as libpq ones."""
    dsn = dsn.strip()
    match = re.match(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", dsn)
    if match:
        dsn = "postgresql://" + dsn[match.end() :]
    return dsn


# Where a password is written in a DSN, found leniently, since the DSNs that produce error
# messages are the malformed ones: in a URL (with or without its scheme), from the first ':'
# of the user info to the last '@' (an '@' or '/' the writer forgot to percent-encode stays
# inside); in key=value form, the value of `password`, quoted or not.
_URL_PASSWORD = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^:/?#@\s]*:(?P<password>.*)@")
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(?P<password>'(?:[^'\\]|\\.)*'?|\S+)")
_QUOTED = re.compile(r"([\"'])(.*?)\1")
HIDDEN = "***"


def hide_password(message: str, dsn: str) -> str:
    """`message` with the DSN's password taken out: the password itself wherever it appears,
    and any quoted fragment of the DSN that overlaps where the password is written (libpq
    quotes such fragments when it misreads a DSN: a host 'ss' from 'p@ss/word').

    >>> hide_password('bad URI: "postgresql://me:s3cret@[::1"', "postgresql://me:s3cret@[::1")
    'bad URI: "***"'
    """
    spans = [
        match.span("password")
        for pattern in (_URL_PASSWORD, _KEYWORD_PASSWORD)
        for match in pattern.finditer(dsn)
    ]
    secrets = set()
    for start, end in spans:
        written = dsn[start:end]
        secrets |= {written, written.strip("'"), unquote(written), unquote(written.strip("'"))}
    try:
        from psycopg.conninfo import conninfo_to_dict

        parsed = conninfo_to_dict(dsn).get("password")
    except Exception:  # a malformed DSN: what libpq would read is unknown, the spans stand
        parsed = None
    if isinstance(parsed, str):
        secrets.add(parsed)

    def overlaps(fragment: str) -> bool:
        at = dsn.find(fragment)
        while fragment and at >= 0:
            if any(at < end and at + len(fragment) > start for start, end in spans):
                return True
            at = dsn.find(fragment, at + 1)
        return False

    message = _QUOTED.sub(lambda m: f"{m[1]}{HIDDEN}{m[1]}" if overlaps(m[2]) else m[0], message)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, HIDDEN)
    return message


def validate_queue_name(queue: str) -> str:
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        raise ConfigurationError(
            f"invalid queue name {queue!r}: use 1-100 letters, digits, '_', '.', ':' or '-'"
        )
    return queue


def validate_priority(priority: int) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigurationError(f"priority must be an int, got {priority!r}")
    if not -32768 <= priority <= 32767:
        raise ConfigurationError(f"priority must be between -32768 and 32767, got {priority}")
    return priority


# How many jobs a worker runs at once when `concurrency` is not given (issue 17, measured in
# docs/benchmarks.md "Defaults"). An async job is a coroutine on the worker's event loop, and
# a slot costs next to nothing: an app whose tasks are all async gets ASYNC_CONCURRENCY,
# unless some are transactional (each running transactional job holds a database connection)
# or sync tasks go to a process pool. Any other app gets SYNC_CONCURRENCY, as a sync job runs
# on a thread of its own, holding whatever the task's code holds there (Django, for one, keeps
# a database connection per thread).
SYNC_CONCURRENCY = 10
ASYNC_CONCURRENCY = 100
# The most jobs per slot a worker may be told to hold claimed ahead of its free slots
# (`--claim-ahead`): held jobs are claims the rest of the fleet cannot take.
MAX_CLAIM_AHEAD = 100


def default_concurrency(tasks: Iterable[Task[Any, Any]], pool: str = "thread") -> int:
    """The concurrency of a worker of an app with these tasks when none is given."""
    tasks = list(tasks)
    if pool == "thread" and tasks and all(t.is_async and not t.transactional for t in tasks):
        return ASYNC_CONCURRENCY
    return SYNC_CONCURRENCY


@dataclass(frozen=True)
class WorkerSettings:
    """How one `pgqueue worker` process runs; see `pgqueue worker --help` for each knob."""

    queues: tuple[str, ...] = ()
    # None: chosen from the app's tasks when the worker starts (default_concurrency).
    concurrency: int | None = None
    shutdown_timeout: float = 30.0
    poll_interval: float = 1.0
    heartbeat_interval: float = 1.0
    # A worker whose session lock is gone is lost once its last heartbeat is this old; the
    # grace lets a worker whose connection blipped reconnect and keep its jobs.
    lock_grace: float = 2.0
    # A worker whose heartbeat is older than this is treated as lost even if its session
    # still holds its lock (a host cut off from the network can leave such a session behind).
    heartbeat_timeout: float = 30.0
    rescue_interval: float = 1.0
    completion_batch_size: int = 100
    # Claiming ahead (see worker.AHEAD_SECONDS): a worker whose jobs end quickly holds up to
    # this many claimed jobs per slot beyond its free slots; 0 claims for free slots only.
    claim_ahead: int = 4
    # The latest progress a task publishes (`set_progress`) is written at most this often:
    # a task may publish thousands of times a second at the cost of a few writes.
    progress_interval: float = 0.25
    # Run the periodic scheduler in this worker too (safe with any number of workers).
    run_scheduler: bool = True
    # Where sync tasks run: "thread" (a thread pool) or "process" (child processes, for
    # CPU-bound tasks; needs app_path, the module:attribute the children import).
    pool: str = "thread"
    app_path: str | None = None
    # Finished jobs (succeeded, failed, cancelled) older than this are deleted by the workers'
    # maintenance passes, at most once a minute each; 0 keeps them forever.
    retention: float = 7 * 24 * 3600.0
    prune_interval: float = 60.0
    name: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for queue in self.queues:
            validate_queue_name(queue)
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in (
            "shutdown_timeout",
            "poll_interval",
            "heartbeat_interval",
            "rescue_interval",
            "lock_grace",
            "progress_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.heartbeat_timeout <= self.heartbeat_interval * 2:
            raise ConfigurationError(
                "heartbeat_timeout must be more than twice heartbeat_interval "
                f"(got {self.heartbeat_timeout} and {self.heartbeat_interval})"
            )
        if self.retention < 0:
            raise ConfigurationError(f"retention must be >= 0 seconds, got {self.retention}")
        if self.pool not in ("thread", "process"):
            raise ConfigurationError(f"pool must be 'thread' or 'process', got {self.pool!r}")
        if self.pool == "process" and not self.app_path:
            raise ConfigurationError(
                "the process pool needs the app as module:attribute (--app) so that its "
                "processes can import it"
            )
        if not 1 <= self.completion_batch_size <= 200:
            raise ConfigurationError("completion_batch_size must be between 1 and 200")
        if (
            not isinstance(self.claim_ahead, int)
            or isinstance(self.claim_ahead, bool)
            or not 0 <= self.claim_ahead <= MAX_CLAIM_AHEAD
        ):
            raise ConfigurationError(
                f"claim_ahead (--claim-ahead) must be a whole number of jobs per slot from 0 "
                f"to {MAX_CLAIM_AHEAD}, got {self.claim_ahead!r} (0 claims for free slots only)"
            )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigurationError(
            f"invalid duration {text!r}: use a number of seconds, or a number with s, m, h, d "
            "or w (e.g. 7d)"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def parse_queues(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'a,b' or ['a', 'b'] -> ('a', 'b'), each name validated."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(validate_queue_name(item.strip()) for item in items if item.strip())
