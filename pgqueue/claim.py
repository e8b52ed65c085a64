"""Claiming: wait for a NOTIFY, a freed slot, a due timer or the poll tick; then claim up to the
number of free slots (and the room the worker keeps ahead of them, see worker.AHEAD_SECONDS)
in one `SELECT ... FOR UPDATE SKIP LOCKED` statement.

A worker reads each queue on from where its claims got to in each priority (its positions), so
that an old snapshot's dead index entries are not stepped over at every claim (see CLAIM_JOBS).
Every enqueue notification says where its jobs sort (`queue@run_at@priority`), and the claimer
moves a position back to just before them when they sort before it: a job committed late, a
countdown or retry coming due, a rescued job or one of a higher priority is then read at the
next claim, not at the next read of the queue from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import psycopg

from pgqueue import _json, queries
from pgqueue.outcome import ClaimedJob, Failed, simple_error

logger = logging.getLogger("pgqueue.worker")

# Where the claims got to in one priority of a queue: the (priority, run_at, id) of the last job
# they took there (everything before it in that priority was claimed, or is announced by a
# notification).
Position = tuple[int, datetime, int]

# Priorities are smallints: bounds that take in every one of them.
ABOVE_ALL_PRIORITIES = 32768
BELOW_ALL_PRIORITIES = -32769
# A position moved back for a notification sits this much before the run_at it names: the epoch
# in the payload is decimal text, and a rounding of it must never put the position after the job.
REWIND_MARGIN = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Claim:
    """What one claim statement took: jobs to run, and jobs it ended instead (expired, or
    cancelled while waiting for a retry): `taken` counts both, against the limit."""

    jobs: list[ClaimedJob]
    ended: list[tuple[int, str]]
    # Per queue and priority, the (priority, run_at, id) of the last job taken there.
    last: dict[str, dict[int, Position]]
    # Jobs whose stored arguments could not be decoded (written by SQL or a trigger: an int
    # past Python's digit limit, nesting past its recursion limit): each ends FAILED.
    unreadable: list[Failed] = field(default_factory=list)

    @property
    def taken(self) -> int:
        return len(self.jobs) + len(self.ended) + len(self.unreadable)


def claim_params(
    queues: Sequence[str],
    limit: int,
    worker_id: int,
    after: Mapping[str, Collection[Position]] | None = None,
) -> dict[str, Any]:
    """CLAIM_JOBS's parameters: the stretches of each queue to read, in claim order.

    A queue with positions (at most one per priority) is read after each position within its
    priority, and the priorities between and below them from their start; priorities above
    the highest position are not read (a notification gives them a position). A queue
    without positions is read whole, from its start.
    """
    names: list[str] = []
    priorities: list[int | None] = []
    run_ats: list[datetime | None] = []
    ids: list[int | None] = []
    lower_than: list[int] = []
    higher_than: list[int] = []

    def stretch(queue: str, position: Position | None, below: int, above: int) -> None:
        names.append(queue)
        priorities.append(position[0] if position else None)
        run_ats.append(position[1] if position else None)
        ids.append(position[2] if position else None)
        lower_than.append(below)
        higher_than.append(above)

    for queue in queues:
        upper = ABOVE_ALL_PRIORITIES
        for position in sorted((after or {}).get(queue, ()), key=lambda p: -p[0]):
            if upper != ABOVE_ALL_PRIORITIES and upper - position[0] > 1:
                stretch(queue, None, upper, position[0])  # the priorities between, whole
            stretch(queue, position, 0, 0)
            upper = position[0]
        stretch(queue, None, upper, BELOW_ALL_PRIORITIES)  # below the lowest position, whole
    return {
        "queues": names,
        "after_priority": priorities,
        "after_run_at": run_ats,
        "after_id": ids,
        "lower_than": lower_than,
        "higher_than": higher_than,
        "limit": limit,
        "worker_id": worker_id,
    }


async def claim_jobs(
    conn: psycopg.AsyncConnection[Any],
    queues: Sequence[str],
    limit: int,
    worker_id: int,
    after: Mapping[str, Collection[Position]] | None = None,
) -> Claim:
    """Claim up to `limit` due jobs for `worker_id`; each claim bumps the attempt and draws a
    new lease (its fencing token).

    A queue with positions in `after` is read on from them (see `claim_params`); the others
    from the start.
    """
    async with conn.cursor() as cur:
        await cur.execute(queries.CLAIM_JOBS, claim_params(queues, limit, worker_id, after))
        rows = await cur.fetchall()
    return read_claim(rows)


def read_claim(rows: list[Any]) -> Claim:
    """The Claim that CLAIM_JOBS's rows say (a sync caller, `pgqueue.testing.drain`, runs the
    statement on its own connection and reads them here)."""
    # The statement returns rows in no particular order; start the most urgent first.
    rows.sort(key=lambda r: (-r[5], r[0]))
    jobs = []
    ended = []
    unreadable: list[Failed] = []
    last: dict[str, dict[int, Position]] = {}
    for row in rows:
        id_, queue, task_name, args, kwargs, priority, attempts, max_attempts, run_at = row[:9]
        lease, created_at, wait, headers, dead = row[9], row[10], row[11], row[12], row[13]
        if dead:
            ended.append((id_, task_name))
            continue
        job = ClaimedJob(
            id_, queue, task_name, [], {}, priority, attempts, max_attempts, lease, created_at, wait
        )
        if headers is not None:
            job.headers = readable_headers(id_, headers)
        # Arguments come as text: decoded here, without the driver's bytes decoding. One job
        # whose arguments Python cannot read ends FAILED; the claim's other jobs run.
        try:
            job.args = _json.loads(args)
            job.kwargs = _json.loads(kwargs)
        except Exception as exc:
            unreadable.append(Failed(job, unreadable_arguments(exc)))
        else:
            jobs.append(job)
        reached = last.setdefault(queue, {})
        if priority not in reached or (run_at, id_) > reached[priority][1:]:
            reached[priority] = (priority, run_at, id_)
    return Claim(jobs, ended, last, unreadable)


def readable_headers(job_id: int, text: str) -> dict[str, Any] | None:
    """A job's stored headers, when they are a JSON object Python can read. Headers are
    metadata: anything else is logged and dropped, and the job runs as it would without."""
    try:
        headers = _json.loads(text)
    except Exception as exc:
        logger.warning("job %d: its headers cannot be read (%s); running it without", job_id, exc)
        return None
    if not isinstance(headers, dict):
        logger.warning(
            "job %d: its headers are a JSON %s, not an object; running it without",
            job_id,
            type(headers).__name__,
        )
        return None
    return headers


def unreadable_arguments(exc: BaseException) -> dict[str, Any]:
    """The error of a job whose stored arguments cannot be decoded."""
    reason = " ".join(str(exc).split())[:500] or type(exc).__name__
    return simple_error(
        "BadArguments",
        f"the job's stored arguments cannot be read ({type(exc).__name__}: {reason}); "
        "enqueue it again with arguments that are plain JSON",
    )


def rewind(positions: dict[int, Position], priority: int, run_at: datetime) -> None:
    """Move the positions of one queue so that a job of `priority` due at `run_at` is read by
    the next claim. Moving back never misses a job; it only costs reading over the entries
    between. A priority between or below the positions is read from its start anyway, and one
    above them all is not read at all until it has a position."""
    start = (priority, run_at - REWIND_MARGIN, 0)
    current = positions.get(priority)
    if current is not None:
        if start[1:] < current[1:]:
            positions[priority] = start
    elif positions and priority > max(positions):
        positions[priority] = start


class Enqueued(NamedTuple):
    """What an enqueue notification says: the queue, and where its jobs sort (their priority
    and run_at, as seconds since the epoch) when the sender says so (pgqueue since it moves
    positions back; a hand-written `pg_notify(..., queue)` says only the queue)."""

    queue: str
    run_at: float | None = None
    priority: int | None = None
    later: bool = False  # due after the commit: wake up at run_at


def parse_enqueued(payload: str) -> Enqueued:
    """Read a `pgqueue_enqueued` payload: `queue`, `queue@epoch` (a job due later, as older
    versions send it), `queue@epoch@priority` (jobs due now, none sorting before that run_at
    in that priority) or `queue@epoch@priority@later`. Queue names never hold an `@`."""
    parts = payload.split("@")
    if len(parts) == 1:
        return Enqueued(payload)
    try:
        when = float(parts[1])
        priority = int(parts[2]) if len(parts) > 2 else None
    except ValueError:  # not ours to read: wake up, the claim finds out
        return Enqueued(parts[0])
    # A payload sent by hand, or a run_at of 'infinity' or year 20000, must not reach the
    # datetime arithmetic of the claim loop: it is only a wake-up then.
    if not _EPOCH_RANGE[0] <= when <= _EPOCH_RANGE[1]:
        return Enqueued(parts[0])
    if priority is None:
        return Enqueued(parts[0], when, None, True)
    if not -32768 <= priority <= 32767:
        return Enqueued(parts[0])
    return Enqueued(parts[0], when, priority, len(parts) > 3 and parts[3] == "later")


# The due times a payload may announce, in seconds since the epoch: year 1 to 9998, what a
# datetime can hold with room for the claim's arithmetic (NaN fails both comparisons).
_EPOCH_RANGE = (-62135596800.0 + 86400, 253370764800.0)


MAX_TIMERS = 10_000

# How many of the live workers serving a queue an enqueue's notification wakes: every enqueue
# costs this many claims, however large the fleet (a fleet of 50 idle workers sent 50 claims
# per enqueue, 49 of them finding nothing). More than one, so that one busy worker does not
# leave the job to the poll. A worker whose claim after a wake-up comes back full announces
# the queue again (`reannounce`), so a burst wakes more of the fleet as it needs them.
WAKE_FANOUT = 2
# In a fleet of more workers than this serving the same queues, each polls (and runs its
# maintenance and scheduler passes) less often, so that the fleet does about this many per
# interval: 50 idle workers polled 50 times a second between them.
SHARERS = 4
_SPREAD = 2654435761  # Knuth's multiplicative hash: neighbouring due times spread apart


class ClaimSignal:
    """Tells the claimer when to look for work, and where (`take_rewinds`).

    NOTIFY is only a hint: a lost one costs at most `poll_interval` of latency, or the time to
    the next read of the queue from its start, never a job. Payloads are read by
    `parse_enqueued`; one for jobs due later sets a timer for their due time.
    """

    def __init__(self, queues: Sequence[str], poll_interval: float) -> None:
        self.queues = frozenset(queues)
        self.poll_interval = poll_interval
        # Per queue, this worker's place among the live workers serving it and their number,
        # refreshed by each heartbeat (from the notifier's thread: the dict is replaced whole).
        self._fleet: dict[str, tuple[int, int]] = {}
        self.notifications_skipped = 0  # left to other workers (see wakes_me)
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Due times (ms since the epoch) with a wake-up timer set, each with where its jobs
        # sort: one timer each, so that a retry due just after another is not left to the poll
        # tick. Bounded: past the bound, the poll tick is the fallback.
        self._timers: dict[int, dict[tuple[str, int], float]] = {}
        # Per (queue, priority): the earliest run_at announced since the claimer last asked.
        self._rewinds: dict[tuple[str, int], float] = {}

    def wake(self) -> None:
        self._event.set()

    def wake_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def on_notify_threadsafe(self, payload: str) -> None:
        """Called from the notifier's thread for each enqueue notification."""
        self._loop.call_soon_threadsafe(self._on_notify, payload)

    def set_fleet(self, fleet: dict[str, tuple[int, int]]) -> None:
        """Per queue: (this worker's place, how many live workers serve the queue)."""
        self._fleet = fleet

    def fleet_size(self) -> int:
        """How many live workers serve the least-served of this worker's queues (1 until
        known): a queue only this worker serves is polled by it alone."""
        return min((size for _, size in self._fleet.values()), default=1)

    def wakes_me(self, note: Enqueued) -> bool:
        """Whether this notification is this worker's to act on: WAKE_FANOUT of the live
        workers serving its queue are, chosen from the notification's due time, so that all
        workers choose the same ones and each enqueue picks others. The rest leave it to them;
        should the chosen be busy, their next claim or the poll takes the job."""
        if note.run_at is None:
            return True  # nothing to choose by: everyone looks
        place, fleet = self._fleet.get(note.queue, (0, 0))
        if fleet <= WAKE_FANOUT:
            return True
        start = (int(note.run_at * 1_000_000) * _SPREAD) % fleet
        return (place - start) % fleet < WAKE_FANOUT

    def _on_notify(self, payload: str) -> None:
        note = parse_enqueued(payload)
        if note.queue not in self.queues:
            return
        if not self.wakes_me(note):
            self.notifications_skipped += 1
            if not note.later and note.priority is not None and note.run_at is not None:
                # Not this worker's to wake for, but its next claim reads from there.
                _keep_earliest(self._rewinds, (note.queue, note.priority), note.run_at)
            return
        if note.later and note.run_at is not None and note.run_at > time.time():
            key = int(note.run_at * 1000)
            timer = self._timers.get(key)
            if timer is None:
                if len(self._timers) >= MAX_TIMERS:
                    return
                timer = self._timers[key] = {}
                self._loop.call_later(note.run_at - time.time(), self._timer_due, key)
            if note.priority is not None:
                _keep_earliest(timer, (note.queue, note.priority), note.run_at)
            return
        if note.priority is not None and note.run_at is not None:
            _keep_earliest(self._rewinds, (note.queue, note.priority), note.run_at)
        self._event.set()

    def _timer_due(self, key: int) -> None:
        for where, run_at in self._timers.pop(key, {}).items():
            _keep_earliest(self._rewinds, where, run_at)
        self._event.set()

    def take_rewinds(self) -> dict[tuple[str, int], datetime]:
        """Per (queue, priority), the earliest run_at of the jobs announced since the last
        call: the claimer moves its positions back to them (`rewind`)."""
        taken, self._rewinds = self._rewinds, {}
        return {
            where: datetime.fromtimestamp(run_at, timezone.utc) for where, run_at in taken.items()
        }

    async def wait(self) -> None:
        """Return when it is time to claim: woken, a timer came due, or the poll tick."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), self.poll_interval * self.spread())
        self._event.clear()

    def spread(self) -> float:
        """How many poll intervals apart this worker's polls (and other fleet-wide chores)
        are: 1 in a small fleet; in a larger one the workers share them, so that about
        SHARERS of them poll each interval however many there are, at random phases."""
        fleet = self.fleet_size()
        if fleet <= SHARERS:
            return 1.0
        return fleet / SHARERS * random.uniform(0.8, 1.2)


def _keep_earliest(
    times: dict[tuple[str, int], float], where: tuple[str, int], run_at: float
) -> None:
    known = times.get(where)
    if known is None or run_at < known:
        times[where] = run_at
