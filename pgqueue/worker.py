"""The worker: owns the thread pool, claimer, completer, notifier and rescuer; starts and stops.

One asyncio loop claims jobs (for its free slots, and a few milliseconds of short jobs ahead of
them: see AHEAD_SECONDS), runs async tasks on the loop and sync tasks on a thread pool, and
hands each Outcome to the batch completer. A notifier thread keeps the LISTEN session, which
also holds the worker's presence lock and heartbeat.

A worker declared lost (its session was away longer than the lock grace) learns it when its
heartbeat or reconnect finds its row gone; it registers again, and every attempt whose job was
rescued meanwhile is stopped (async tasks and pool processes cancelled, sync tasks' cancel
flag set) and writes nothing: the job is someone else's now.

Stopping: the first SIGTERM/SIGINT stops claiming, gives claimed-but-unstarted jobs back and
lets running jobs finish for up to `shutdown_timeout` seconds; a second signal (or the end of
the grace period) interrupts what is still running, and those jobs go back to the queue as
retries (or end FAILED when no attempts remain). Nothing is lost: if even that write fails,
the fleet's rescuer returns the jobs once this process's lock is gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import queries, signals
from pgqueue._connection import HOT_PATH_SETTINGS, ConnectionLane, ReconnectingConnection
from pgqueue._names import NOTIFY_CANCEL, NOTIFY_ENQUEUED
from pgqueue._pooling import probe_pooling
from pgqueue._task_threads import TaskThreads
from pgqueue.app import App
from pgqueue.claim import Claim, ClaimSignal, Position, claim_jobs, rewind
from pgqueue.complete import Completer, cannot_write_now, write_outcomes_and_claim
from pgqueue.config import WorkerSettings, default_concurrency
from pgqueue.context import CancelFlag
from pgqueue.errors import ConfigurationError, DatabaseUnavailable
from pgqueue.execute import Executor
from pgqueue.limits import claim_limited_jobs, limited_task_names, sync_limits
from pgqueue.maintenance import (
    cancel_requests_for,
    expire_queued_jobs,
    jobs_held_by,
    prune_finished_jobs,
    prune_past_workers,
    rescue_lost_jobs,
    rescue_orphaned_jobs,
)
from pgqueue.notifier import Notifier
from pgqueue.observations import Observations
from pgqueue.outcome import (
    Cancelled,
    ClaimedJob,
    Failed,
    LeaseLost,
    Outcome,
    RetryLater,
    Succeeded,
    error_info,
    simple_error,
)
from pgqueue.periodic import SchedulerPasses
from pgqueue.presence import Presence
from pgqueue.progress import ProgressWriter
from pgqueue.revisions import check_schema

if TYPE_CHECKING:
    from pgqueue.process_pool import ProcessPool

logger = logging.getLogger("pgqueue.worker")

REGISTER_TIMEOUT = 30.0
INTERRUPTED_THREAD_RETRY_DELAY = 10.0
# A job running under this worker's id for longer than this, that it does not know about, was
# claimed by a claim whose reply was lost.
STRAY_AGE = 10.0
# Checks that read every job this worker (or the fleet) runs, and so every dead index entry an
# old snapshot keeps, run this often rather than each maintenance pass: a look for stray claims
# (see above), and one for running jobs whose worker row is gone.
STRAY_CHECK_INTERVAL = STRAY_AGE / 2
ORPHAN_CHECK_INTERVAL = 10.0
# What a background loop survives by logging, reconnecting and trying again: any error from
# the database or the network, including pgqueue's own "could not connect".
DATABASE_TROUBLE = (psycopg.Error, OSError, DatabaseUnavailable)
FINAL_FLUSH_TIMEOUT = 10.0
# The outcome rollup (pgqueue_stats) is written by the maintenance loop at least this often
# while there is something to write, and rows past 25 hours are deleted this often.
STATS_FLUSH_INTERVAL = 2.0
STATS_PRUNE_INTERVAL = 60.0
# At exit, how long the maintenance loop gets to end its pass before it is cancelled.
MAINTENANCE_STOP_TIMEOUT = 2.0
# How often a worker reads each queue from its start rather than on from its positions: the
# longest a job that sorts before a position can wait when its notification was lost (one that
# arrives moves the position back to it). When such reads grow slow (an old snapshot keeps
# many dead index entries at the start), they are spaced out so as to take at most
# 1/FULL_CLAIM_SHARE of the time.
FULL_CLAIM_INTERVAL = 1.0
FULL_CLAIM_SHARE = 10
# Positions kept per queue (one per priority claimed from); past this, the lowest priorities
# are read from their start.
MAX_POSITIONS_PER_QUEUE = 16
# A claim takes up to this many jobs even when that is more than half the slots (see Worker).
MIN_CLAIM_LIMIT = 10
# Claiming ahead: a worker whose jobs end quickly claims more than its free slots and holds the
# rest, so that the next claim's round trip overlaps the jobs it follows instead of coming
# after them (each slot takes its next job as it frees, with no round trip between). It holds
# what its slots get through in AHEAD_SECONDS, by the mean time its recent jobs ran, and no
# more than `--claim-ahead` jobs a slot (WorkerSettings.claim_ahead, 4; 0 holds none): a
# held job waits about AHEAD_SECONDS for a slot, and a worker of 10 slots whose jobs take
# more than half a second holds none. A job held longer than AHEAD_HOLD (the jobs before it turned
# slow) is given back to the queue for another worker. Jobs of tasks with fleet-wide limits
# are claimed for free slots, or one at a time when none is free, first in line: held long,
# one would keep a place of its limit unused.
AHEAD_SECONDS = 0.05
AHEAD_HOLD = 0.5
# While claiming ahead, one claim takes up to this many jobs: the slots of a small worker
# free faster than claims of their number come back.
AHEAD_CLAIM = 50
# How much each job's run time weighs in the mean the worker keeps (an exponential average).
DURATION_WEIGHT = 0.2
# A pruning pass deletes at most this many batches, so that rescues are never held up for
# long; a pass that hits the limit is followed by another at the next maintenance pass (every
# second), so pruning keeps up with thousands of jobs a second.
PRUNE_BATCH = 1000
# A worker with no job running for this long closes the connections its tasks opened (those
# their enqueues made, and those transactional tasks keep for the next): at rest it holds two,
# the listening one and the shared one.
REST_AFTER = 10.0
PRUNE_BATCHES_PER_PASS = 10


# How often a worker looks for jobs of limited tasks when nothing says a limit freed a place.
LIMITED_CLAIM_INTERVAL = 0.05
_NOTHING_CLAIMED = Claim([], [], {})


def _joined(first: Claim, second: Claim) -> Claim:
    """Two claims of one pass as one; positions are the second's (the first reads none)."""
    return Claim(
        first.jobs + second.jobs,
        first.ended + second.ended,
        second.last,
        first.unreadable + second.unreadable,
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Worker:
    """A worker process's engine. `run()` blocks until stopped and returns the exit code."""

    def __init__(self, app: App, settings: WorkerSettings | None = None) -> None:
        self.app = app
        app.set_as_current()  # shared tasks its jobs enqueue go through the worker's App
        settings = settings or WorkerSettings()
        # Jobs run at once: as given, else chosen from the app's tasks (config.py says how).
        self.concurrency: int = settings.concurrency or default_concurrency(
            app.tasks.values(), settings.pool
        )
        self.settings = replace(settings, concurrency=self.concurrency)
        self.queues = self.settings.queues or app.queues()
        self.running: dict[int, asyncio.Task[None]] = {}
        # Per running job: set when its cancellation is requested (JobContext reads it).
        self.cancel_events: dict[int, CancelFlag] = {}
        # Jobs whose asyncio task the worker itself cancelled: on a cancel request, or to
        # interrupt them at shutdown. Any other CancelledError is the task's own failure.
        self._cancelling: set[int] = set()
        self._interrupting: set[int] = set()
        # Per running or held job: its claim, and the worker id it was claimed under.
        self._claims: dict[int, ClaimedJob] = {}
        self._claimed_under: dict[int, int] = {}
        # Attempts stopped because their lease is gone, by lease: they still hold a slot
        # until they end (a sync task runs until it reads its cancel flag), and write nothing.
        self._abandoned: dict[int, asyncio.Task[None]] = {}
        # Per queue: where the claims got to in each priority, and when the queue was last
        # read whole.
        self._positions: dict[str, dict[int, Position]] = {}
        self._full_claim_at: dict[str, float] = {}
        self._full_claim_seconds = 0.0  # how long the last claim with a full read took
        # A claim takes at most half the slots, so that the next claim's round trip overlaps
        # with running the jobs of the last one instead of waiting for them all to finish;
        # but up to MIN_CLAIM_LIMIT (all the slots of a smaller worker), since each round trip
        # carries a claim and the outcomes before it: at 10 slots, claims of 5 left a worker
        # of short jobs waiting on round trips (4,700 jobs/s against 7,400 with claims of 10;
        # at 100 slots, claims of 50 did better than 100).
        self._claim_limit = max(min(self.concurrency, MIN_CLAIM_LIMIT), (self.concurrency + 1) // 2)
        self._ahead_per_slot = settings.claim_ahead  # jobs a slot may hold claimed ahead
        self.forced = False
        self.crashed = False
        self._stop_count = 0
        self._claims_paused = False
        self._last_claim_full = False  # the last claim took all it asked for
        # Jobs claimed ahead of the free slots, oldest first, with when each was claimed
        # (monotonic); the mean time the last jobs ran (None: nothing known, nothing held);
        # the timer that gives back jobs held too long.
        self._ahead: collections.deque[tuple[ClaimedJob, float]] = collections.deque()
        self._mean_run: float | None = None
        self._hold_check: asyncio.TimerHandle | None = None
        self._giving_back: set[asyncio.Task[None]] = set()
        # What this worker did, for pgqueue_stats and its Prometheus endpoint.
        self.observations = Observations()
        # The app's tasks with fleet-wide limits, claimed by their own claim (pgqueue.limits)
        # when it is due (monotonic time), with a wake-up set for then.
        self._limited_names = limited_task_names(app.tasks.values())
        self._limited_due = 0.0
        self._limited_wake: asyncio.TimerHandle | None = None
        # When a job last ran here (monotonic), and whether the tasks' connections were closed
        # since (see REST_AFTER).
        self._busy_at = time.monotonic()
        self._at_rest = True

    # -- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail fast, with a one-line reason: the database must be reachable and migrated."""
        with self.app.connect(autocommit=True) as conn:
            check_schema(conn)
        self._check_listen_dsn()

    def _check_listen_dsn(self) -> None:
        """The session-bound connection (LISTEN, the presence lock, the heartbeat) must keep
        one server process: refuse to start behind a pooler in transaction mode, where the
        lock would be taken on a server connection other clients then use and wake-ups would
        go astray."""
        app = self.app
        if app.transaction_pooling and not app.has_own_listen_dsn:
            raise ConfigurationError(
                "the DSN goes through a pooler in transaction mode (transaction pooling is on): "
                "give the worker a direct or session-pooled DSN for LISTEN and its lock with "
                "--listen-dsn or PGQUEUE_LISTEN_DSN"
            )
        probe = probe_pooling(lambda: app.connect_listen(autocommit=True), rounds=2)
        if probe.per_transaction:
            option = "--listen-dsn" if app.has_own_listen_dsn else "--dsn"
            raise ConfigurationError(
                f"the worker's listen DSN ({option}) goes through a pooler in transaction mode "
                "(its server process changed between transactions): LISTEN and the worker's "
                "lock need a direct or session-pooled DSN; see docs/operations.md, PgBouncer"
            )

    def run(self) -> int:
        """Preflight, then run until stopped by signal; returns the process exit code."""
        self.preflight()
        return asyncio.run(self.run_async())

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (a signal, or `request_stop()`)."""
        return self._stop_count > 0

    def request_stop(self) -> None:
        """First call: warm shutdown. Second call: stop at once."""
        self._stop_count += 1
        if self._stop_count == 1:
            logger.info(
                "stopping: no new jobs; waiting up to %gs for %d running job(s) "
                "(signal again to stop at once)",
                self.settings.shutdown_timeout,
                len(self.running),
            )
            self._stopping.set()
        else:
            logger.warning("stopping at once: running jobs go back to the queue")
            self.forced = True
            self._force.set()
        self._signal.wake()

    async def run_async(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._signal = ClaimSignal(self.queues, self.settings.poll_interval)
        self._install_signal_handlers(loop)
        settings = self.settings

        self.presence = Presence(
            settings.name,
            self.queues,
            self.concurrency,
            on_new_registration=self._on_new_registration_threadsafe,
            pool=settings.pool,
            on_fleet=self._signal.set_fleet,
        )
        signal_ = self._signal
        # The periodic scheduler runs its passes on the listening connection.
        self.scheduler: SchedulerPasses | None = None
        if settings.run_scheduler:
            # Between due ticks, a large fleet shares the scheduler's look at the schedules.
            self.scheduler = SchedulerPasses(self.app, spread=signal_.spread)

        self.notifier = Notifier(
            # A hung session would keep `connected` set while its heartbeat stops, and the
            # worker would be declared lost while it goes on claiming: it must fail instead.
            connect=lambda: self.app.connect_listen(autocommit=True),
            channels=[NOTIFY_ENQUEUED, NOTIFY_CANCEL],
            on_notify=self._on_notify_threadsafe,
            on_connect=self.presence.on_connect,
            on_tick=self.presence.on_tick,
            tick_interval=settings.heartbeat_interval,
            on_ready=signal_.wake_threadsafe,
            on_lost=lambda: self.observations.connection_lost("notifier"),
            on_due=self.scheduler.run_pass_on_shared if self.scheduler is not None else None,
        )
        self.notifier.start()
        registered = await asyncio.to_thread(self.notifier.connected.wait, REGISTER_TIMEOUT)
        if not registered:
            self.notifier.stop()
            raise DatabaseUnavailable(
                "could not register the worker: "
                + (_one_line(self.notifier.failure) if self.notifier.failure else "timed out")
            )
        self.thread_pool = TaskThreads(self.concurrency, name_prefix="pgqueue-task")
        self.process_pool: ProcessPool | None = None
        if settings.pool == "process":
            # multiprocessing's import is paid by the workers that use it, not by every one.
            from pgqueue.process_pool import ProcessPool

            assert settings.app_path is not None
            self.process_pool = ProcessPool(self.app, settings.app_path, self.concurrency)
            self.process_pool.progress_interval = settings.progress_interval
            try:
                await self.process_pool.start()
            except BaseException:
                await self.process_pool.close()
                self.notifier.stop()
                raise
        self.executor = Executor(self.app, self.thread_pool, self.process_pool)
        self.executor.on_slot_freed = self._slot_freed

        logger.info(
            "worker %s (id %s) ready: queues=%s concurrency=%d pool=%s",
            self.presence.name,
            self.presence.worker_id,
            ",".join(self.queues),
            self.concurrency,
            settings.pool,
        )
        if signals.worker_ready.receivers:
            signals.worker_ready.send(sender=self)
        observations = self.observations
        # Behind a transaction pooler a SET would stay on a server connection that other
        # clients use next, and be missing from the one this connection gets: none then.
        hot_path_settings = None if self.app.transaction_pooling else HOT_PATH_SETTINGS
        # The worker's one connection besides the listening one: the claimer, the completer,
        # the progress writer and the maintenance loop take turns on it. Each turn is short
        # (one statement, or one short transaction), and a claim and a batch of outcomes never
        # wait for more than one turn of another loop.
        self._connection = ReconnectingConnection(
            self.app, hot_path_settings, on_lost=lambda: observations.connection_lost("shared")
        )
        self._claim_conn = self._connection.lane()
        self.completer = Completer(self._connection.lane(), settings.completion_batch_size)
        # After a full claim, each job's end wakes the claimer, whose claim takes the outcomes.
        self.completer.claim_coming = lambda: self._last_claim_full and self._claim_room() > 0
        self.progress_writer = ProgressWriter(
            self._connection.lane(), loop, settings.progress_interval
        )
        self.executor.progress = self.progress_writer
        if self.process_pool is not None:
            self.process_pool.progress = self.progress_writer
        # The limits the app's tasks declare, written before the first claim.
        await asyncio.to_thread(self._sync_limits)
        self._maintenance_done = asyncio.Event()
        completer_task = asyncio.create_task(self.completer.run(), name="pgqueue-completer")
        progress_task = asyncio.create_task(self.progress_writer.run(), name="pgqueue-progress")
        rescuer_task = asyncio.create_task(self._maintenance_loop(), name="pgqueue-maintenance")
        for service in (completer_task, progress_task, rescuer_task):
            service.add_done_callback(self._on_service_done)
        try:
            await self._claim_loop()
            await self._until_forced(self._give_back_ahead(), FINAL_FLUSH_TIMEOUT)
            await self._finish_running_jobs()
        finally:
            if signals.worker_shutdown.receivers:
                signals.worker_shutdown.send(sender=self)
            # The maintenance loop ends its pass (a rollup write cut short may or may not have
            # committed); cancelled only if the pass hangs.
            self._maintenance_done.set()
            await asyncio.wait({rescuer_task}, timeout=MAINTENANCE_STOP_TIMEOUT)
            rescuer_task.cancel()
            if self.process_pool is not None:
                await self.process_pool.close()
            await self.progress_writer.close(progress_task)
            flushed = await self.completer.drain(FINAL_FLUSH_TIMEOUT)
            if not flushed:
                logger.error(
                    "could not write %d outcome(s) before exiting; those jobs will be rescued "
                    "and run again",
                    self.completer.backlog,
                )
            completer_task.cancel()
            await self.completer.close()
            await self.executor.transactional.aclose()
            await self._write_last_stats()
            self.presence.stopping = True  # before the row goes, or a heartbeat re-registers
            await self._unregister()
            await self._connection.close()
            self.notifier.stop()
            await asyncio.to_thread(self.notifier.join, settings.heartbeat_interval + 1)
            self.thread_pool.shutdown(wait=False, cancel_futures=True)
            self._remove_signal_handlers(loop)
        logger.info("worker %s stopped", self.presence.name)
        return 1 if self.forced or self.crashed else 0

    async def _until_forced(self, step: Coroutine[Any, Any, None], timeout: float) -> None:
        """Run a step of the shutdown, cut short by a second signal or after `timeout`."""
        task = asyncio.create_task(step)
        force = asyncio.create_task(self._force.wait())
        try:
            await asyncio.wait({task, force}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _on_notify_threadsafe(self, channel: str, payload: str) -> None:
        """From the notifier's thread: enqueue hints wake the claimer; cancel requests are
        handed to the loop."""
        if channel == NOTIFY_CANCEL:
            if payload.isdigit():
                self._loop.call_soon_threadsafe(self._cancel_running, int(payload))
        else:
            self._signal.on_notify_threadsafe(payload)

    def _on_new_registration_threadsafe(
        self, old_id: int, new_id: int, kept: frozenset[int]
    ) -> None:
        """From the notifier's thread: the worker registered again; hand it to the loop."""
        self._loop.call_soon_threadsafe(self._on_new_registration, old_id, new_id, kept)

    def _on_new_registration(self, old_id: int, new_id: int, kept: frozenset[int]) -> None:
        """The worker gave up `old_id` (its row is gone, or its old session still holds the
        lock) and now runs as `new_id`, having taken over the claims in `kept` (by lease). Any
        other attempt claimed under the old id lost its lease, its job rescued: stop it, and
        write nothing for it."""
        lost = []
        still_ours = 0
        for job_id, under in list(self._claimed_under.items()):
            if under != old_id:
                continue
            job = self._claims[job_id]
            if job.lease in kept:
                self._claimed_under[job_id] = new_id
                still_ours += 1
            else:
                lost.append(job)
        log = logger.warning if lost else logger.info
        log(
            "worker %s now runs as id %d (id %d is gone): kept %d running job(s), stopping %d "
            "whose lease was lost",
            self.presence.name,
            new_id,
            old_id,
            still_ours,
            len(lost),
        )
        for job in lost:
            self._abandon(job)

    def _abandon(self, job: ClaimedJob) -> None:
        """Stop an attempt whose lease is gone: cancel an async task or a pool process, set a
        sync task's cancel flag; its slot is held until it ends, and nothing is written. A job
        held ahead is dropped."""
        task = self.running.pop(job.id, None)
        if task is None:
            if self._drop_held(job.id) is not None:
                logger.info(
                    "job %d %s: its lease was lost before it started; dropped", job.id,
                    job.task_name,
                )  # fmt: skip
            return
        flag = self.cancel_events.get(job.id)
        self._forget(job.id)
        self._abandoned[job.lease] = task
        if flag is not None:
            flag.set()
        job_task = self.app.tasks.get(job.task_name)
        stoppable = job_task is None or job_task.is_async or self.process_pool is not None
        if stoppable:
            task.cancel()
        logger.warning(
            "job %d %s attempt %d/%d: %s; its lease was lost (the job was rescued from this "
            "worker), so nothing it does is written",
            job.id,
            job.task_name,
            job.attempt,
            job.max_attempts,
            "cancelled" if stoppable else "asked to stop (cancel flag set)",
        )

    def _forget(self, job_id: int) -> None:
        """Drop what the worker keeps of a job it no longer runs nor holds."""
        self.cancel_events.pop(job_id, None)
        self._claims.pop(job_id, None)
        self._claimed_under.pop(job_id, None)
        self._cancelling.discard(job_id)
        self._interrupting.discard(job_id)

    def _end_unrun(self, outcome: Outcome) -> None:
        """The outcome of a claimed job that never ran: logged, counted, written, signalled."""
        job = outcome.job
        self._log_outcome(outcome, 0.0)
        self.observations.attempt_ended(job.queue, job.task_name, outcome.status, job.wait, 0.0)
        self.completer.submit(outcome)
        if signals.live:
            signals.attempt_ended(self.app, outcome, 0.0)

    def _cancel_running(self, job_id: int) -> None:
        """Cancel a job this worker runs (ignored if it runs elsewhere or has finished).

        The flag is always set, for sync tasks to read; an async task is also cancelled at
        its current `await`. A sync task that ignores the flag runs to its end, and its own
        outcome is stored.
        """
        event = self.cancel_events.get(job_id)
        task = self.running.get(job_id)
        if task is None and event is not None:
            held = self._drop_held(job_id)
            if held is not None:  # held ahead: it ends CANCELLED without running
                self._end_unrun(Cancelled(held, simple_error("Cancelled", "cancelled on request")))
                return
        if event is None or task is None or event.is_set():
            return
        event.set()
        claim = self._claims.get(job_id)
        job_task = self.app.tasks.get(claim.task_name) if claim is not None else None
        logger.info("job %d: cancellation requested", job_id)
        if job_task is not None and (job_task.is_async or self.process_pool is not None):
            self._cancelling.add(job_id)
            task.cancel()  # an async task at its await; a pool process is terminated

    def _on_service_done(self, task: asyncio.Task[None]) -> None:
        """A background loop must not die quietly: stop the worker, with a non-zero exit."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        logger.critical(
            "%s stopped on an unexpected error, stopping the worker: %s: %s",
            task.get_name(),
            type(exc).__name__,
            exc,
        )
        self.crashed = True
        if not self._stopping.is_set():
            self.request_stop()

    @staticmethod
    def stuck_threads(wait: float = 1.0) -> list[threading.Thread]:
        """Task threads still alive after `wait` seconds: sync tasks Python cannot stop."""
        deadline = time.monotonic() + wait
        threads = [t for t in threading.enumerate() if t.name.startswith("pgqueue-task")]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    # -- claiming -------------------------------------------------------------------------

    def free_slots(self) -> int:
        busy = len(self.running) + len(self._abandoned) + len(self.executor.overrunning_threads)
        return self.concurrency - busy

    async def _claim_loop(self) -> None:
        backoff = 0.1
        want_claim = True
        self._last_claim_full = False
        idle = True  # the last claim found nothing (or none was made yet)
        while not self._stopping.is_set():
            room = self._claim_room()
            worker_id = self.presence.worker_id
            # Without the presence lock, claimed jobs would be rescued from under us.
            if (
                room > 0
                and want_claim
                and self.notifier.connected.is_set()
                and worker_id
                and self._heartbeat_fresh()
            ):
                riders: list[Outcome] = []
                conn: psycopg.AsyncConnection[Any] | None = None
                try:
                    async with self._claim_conn.use() as conn:
                        positions, full_read = self._claim_positions(self._signal.take_rewinds())
                        began = time.monotonic()
                        limit = min(room, self._claim_size())
                        queues = self._queue_order()
                        # Limited jobs for the free slots, or one if none is free: it goes
                        # first in line, so that it starts at the next slot to free (held
                        # long, it would keep a place of its limit from the fleet unused).
                        limited = await self._claim_limited(
                            conn, queues, min(limit, max(self.free_slots(), 1)), worker_id
                        )
                        claim = limited
                        if limited.taken < limit:
                            # The outcomes waiting to be written go in the same round trip.
                            riders = self.completer.take_riders()
                            if riders:
                                claim, applied = await write_outcomes_and_claim(
                                    conn, riders, queues, limit - limited.taken, worker_id,
                                    positions,
                                )  # fmt: skip
                                self.completer.riders_written(applied)
                            else:
                                claim = await claim_jobs(
                                    conn, queues, limit - limited.taken, worker_id, positions
                                )
                            if limited.taken:
                                claim = _joined(limited, claim)
                    # Timed only when due to the interval: a queue that never had a job has no
                    # position either, and its cheap reads must not shorten the spacing.
                    if full_read:
                        self._full_claim_seconds = time.monotonic() - began
                except DATABASE_TROUBLE as exc:
                    if riders:
                        # Nothing of the round trip committed: the completer writes those
                        # outcomes on its own, and finds out whether one is at fault. Unless the
                        # database refused what was sent, the claim backs off as any other.
                        self.completer.riders_failed()
                        if isinstance(exc, psycopg.Error) and not cannot_write_now(exc, conn):
                            continue
                    logger.warning(
                        "could not claim jobs, retrying in %.1fs: %s", backoff, _one_line(exc)
                    )
                    await self._claim_conn.reset()
                    await self._sleep_unless_stopping(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                except BaseException:
                    if riders:
                        self.completer.riders_failed()
                    raise
                backoff = 0.1
                self.observations.claimed(claim.taken)
                self._advance_positions(claim.last)
                for failed in claim.unreadable:
                    self._end_unrun(failed)
                for job_id, task_name in claim.ended:
                    logger.info("job %d %s ended CANCELLED before it could run", job_id, task_name)
                if self._stopping.is_set():
                    await self._release_unstarted(claim.jobs)
                    break
                if self.presence.worker_id != worker_id:
                    # The worker registered again while this claim was on its way; made
                    # under an id that may be gone, its jobs are given back unstarted.
                    await self._release_unstarted(claim.jobs)
                    continue
                self._last_claim_full = claim.taken == limit
                want_claim = self._last_claim_full
                for job in claim.jobs:
                    self._record(job, worker_id)
                self._take_up(claim.jobs, first=limited.taken)
                if idle and self._last_claim_full:
                    # Woken for a queue with more jobs than one claim takes: wake others.
                    await self._reannounce(claim)
                idle = claim.taken == 0
                if claim.taken:
                    continue
            await self._signal.wait()
            want_claim = True

    async def _reannounce(self, claim: Claim) -> None:
        """Announce again where the claim got to, so that the notification wakes workers
        other than those the first one did (claim.WAKE_FANOUT): the due time is moved back by
        a few microseconds, which changes who is chosen and nothing else."""
        if not claim.last:
            return  # jobs of limited tasks only: they are claimed by task, not announced
        queue, reached = next(iter(claim.last.items()))
        priority, run_at, _ = reached[max(reached)]
        salt = random.randint(1, 999) / 1_000_000
        payload = f"{queue}@{run_at.timestamp() - salt:.6f}@{priority}"
        try:
            async with self._claim_conn.use() as conn:
                await conn.execute(queries.NOTIFY_ENQUEUED_PAYLOAD, {"payload": payload})
        except DATABASE_TROUBLE as exc:  # a hint only: the poll finds the jobs anyway
            logger.debug("could not announce queue %s again: %s", queue, _one_line(exc))

    @property
    def held_ahead(self) -> int:
        """How many claimed jobs the worker holds ahead of its free slots (not started)."""
        return len(self._ahead)

    def _ahead_wanted(self) -> int:
        """How many jobs to hold claimed beyond the free slots (see AHEAD_SECONDS)."""
        mean = self._mean_run
        if mean is None or self._stopping.is_set():
            return 0
        slots = self.concurrency
        return min(slots * self._ahead_per_slot, int(slots * AHEAD_SECONDS / max(mean, 1e-6)))

    def _claim_size(self) -> int:
        """The most jobs one claim takes: the claim limit, or AHEAD_CLAIM when claiming ahead
        (more than half the slots, as a claim then fills the room ahead, not only slots)."""
        if self._ahead_wanted():
            return max(self._claim_limit, AHEAD_CLAIM)
        return self._claim_limit

    def _claim_room(self) -> int:
        """How many jobs a claim may take now: the free slots and the room ahead of them; 0
        while every slot is busy and at least half of what is wanted ahead is held."""
        free = self.free_slots()
        wanted = self._ahead_wanted()
        held = len(self._ahead)
        if free <= 0 and held > wanted // 2:
            return 0
        return max(0, max(free, 0) + wanted - held)

    def _take_up(self, jobs: list[ClaimedJob], first: int = 0) -> None:
        """Start claimed (and recorded) jobs in the free slots; hold the rest ahead. The
        `first` jobs go before those held already (jobs of limited tasks)."""
        if jobs:
            ahead = self._ahead
            claimed_at = time.monotonic()
            # Put first, they take the oldest one's time: the held jobs stay in the order of
            # their times, which is what the hold check reads.
            first_at = ahead[0][1] if ahead else claimed_at
            ahead.extendleft((job, first_at) for job in reversed(jobs[:first]))
            ahead.extend((job, claimed_at) for job in jobs[first:])
        self._start_ahead()
        if self._ahead and self._hold_check is None:
            self._hold_check = self._loop.call_later(AHEAD_HOLD, self._give_back_held)

    def _start_ahead(self) -> None:
        """Start held jobs, oldest first, while slots are free."""
        ahead = self._ahead
        free = self.free_slots()
        while ahead and free > 0:
            job, _ = ahead.popleft()
            self._run(job)
            free -= 1

    def _slot_freed(self) -> None:
        """A slot freed outside a job's end (a timed-out sync task's thread returned)."""
        if self._ahead and not self._stopping.is_set():
            self._start_ahead()
        if self._claim_room() > 0:
            self._signal.wake()

    def _give_back_held(self) -> None:
        """Give back the jobs held ahead for AHEAD_HOLD or more: the jobs before them run
        longer than the mean said. Nothing is held again until a job ends."""
        self._hold_check = None
        ahead = self._ahead
        due = time.monotonic() - AHEAD_HOLD
        stale = []
        while ahead and ahead[0][1] <= due:
            job, _ = ahead.popleft()
            self._forget(job.id)
            stale.append(job)
        if stale:
            self._mean_run = None
            logger.info(
                "giving back %d job(s) held ahead for %gs: the running jobs are slow",
                len(stale),
                AHEAD_HOLD,
            )
            task = asyncio.get_running_loop().create_task(self._release_unstarted(stale))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
        if ahead:
            self._hold_check = self._loop.call_later(
                ahead[0][1] + AHEAD_HOLD - time.monotonic(), self._give_back_held
            )

    def _drop_held(self, job_id: int) -> ClaimedJob | None:
        """Take a job out of those held ahead, forgotten; None if it is not held."""
        for index, (job, _) in enumerate(self._ahead):
            if job.id == job_id:
                del self._ahead[index]
                self._forget(job_id)
                return job
        return None

    async def _give_back_ahead(self) -> None:
        """At shutdown: every job held ahead goes back to the queue, unstarted."""
        if self._hold_check is not None:
            self._hold_check.cancel()
            self._hold_check = None
        jobs = [job for job, _ in self._ahead]
        self._ahead.clear()
        for job in jobs:
            self._forget(job.id)
        await self._release_unstarted(jobs)
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    def _record(self, job: ClaimedJob, worker_id: int) -> None:
        """Record a claimed job, before it starts or is held."""
        earlier = self._claims.get(job.id)
        if earlier is not None:
            # Claimed again while an attempt of it still runs here (or is held): the job was
            # rescued from this worker (its heartbeat looked stale to the fleet, or to this
            # worker's own maintenance) and came back to it. The earlier attempt's lease is
            # gone; left running, it would run beside the new one, untracked and uncounted.
            self._abandon(earlier)
        self.cancel_events[job.id] = CancelFlag()
        self._claims[job.id] = job
        self._claimed_under[job.id] = worker_id

    def _run(self, job: ClaimedJob) -> None:
        """Start running a recorded job."""
        self._at_rest = False
        self.running[job.id] = asyncio.create_task(self._run_job(job))

    def _heartbeat_fresh(self) -> bool:
        """Whether the worker's last heartbeat is recent enough to claim: past half the
        heartbeat timeout it may be declared lost at any moment (its notifier's connection
        hangs, or the database is unreachable from it), and every job it claims then would
        only be rescued from it and run twice."""
        age = self.presence.heartbeat_age()
        fresh = age < self.settings.heartbeat_timeout / 2
        if fresh and self._claims_paused:
            logger.info("worker %s heartbeat answered again: claiming", self.presence.name)
        elif not fresh and not self._claims_paused:
            logger.warning(
                "worker %s: no heartbeat answered for %.1fs (the timeout is %gs): not claiming "
                "until one is",
                self.presence.name,
                age,
                self.settings.heartbeat_timeout,
            )
        self._claims_paused = not fresh
        return fresh

    def _claim_positions(
        self, rewinds: Mapping[tuple[str, int], datetime] | None = None
    ) -> tuple[dict[str, list[Position]], bool]:
        """Where each queue's claim starts: on from this worker's positions there, moved back
        for the jobs announced since the last claim (`rewinds`, see claim.rewind); but from
        the start when the last full read of the queue is FULL_CLAIM_INTERVAL old, or more
        when full reads are slow (the fallback for a lost notification). Also whether some
        queue is read from its start for that reason (a full read)."""
        for (queue, priority), run_at in (rewinds or {}).items():
            if queue in self._positions:
                rewind(self._positions[queue], priority, run_at)
        now = time.monotonic()
        interval = max(FULL_CLAIM_INTERVAL, FULL_CLAIM_SHARE * self._full_claim_seconds)
        positions = {}
        full_read = False
        for queue in self.queues:
            if now - self._full_claim_at.get(queue, 0.0) >= interval:
                self._full_claim_at[queue] = now
                full_read = True
                self._positions.pop(queue, None)
            elif self._positions.get(queue):
                positions[queue] = list(self._positions[queue].values())
        return positions, full_read

    def _sync_limits(self) -> None:
        with self.app.connect() as conn:
            sync_limits(conn, self.app.tasks.values())
        described = [
            f"{task.name} ({task.limits.describe()})"
            for task in self.app.tasks.values()
            if task.limits is not None
        ]
        if described:
            logger.info("fleet-wide limits: %s", "; ".join(described))

    async def _claim_limited(
        self, conn: psycopg.AsyncConnection[Any], queues: Sequence[str], limit: int, worker_id: int
    ) -> Claim:
        """The jobs of limited tasks this claim may take: at most what their limits allow,
        looked for at most every LIMITED_CLAIM_INTERVAL, unless a limit frees a place sooner
        (a rate's period moves on, a limited job of this worker ends)."""
        if not self._limited_names or limit <= 0:
            return _NOTHING_CLAIMED
        now = time.monotonic()
        if now < self._limited_due:
            self._wake_for_limits_at(self._limited_due)
            return _NOTHING_CLAIMED
        limited = await claim_limited_jobs(conn, queues, self._limited_names, limit, worker_id)
        if limited.claim.taken == limit:
            self._limited_due = now  # it took all it could: there may be more
        elif limited.look_again_in is not None:
            self._limited_due = now + max(limited.look_again_in, 0.0)
            self._wake_for_limits_at(self._limited_due)
        else:
            self._limited_due = now + LIMITED_CLAIM_INTERVAL
        # Limited jobs are read by task, not through the queue's positions.
        return Claim(limited.claim.jobs, limited.claim.ended, {}, limited.claim.unreadable)

    def _wake_for_limits_at(self, when: float) -> None:
        """Wake the claimer at `when` (monotonic time), unless a wake-up is set for sooner."""
        loop = asyncio.get_running_loop()
        wake = self._limited_wake
        if wake is not None and not wake.cancelled() and loop.time() < wake.when() <= when:
            return
        if wake is not None:
            wake.cancel()
        self._limited_wake = loop.call_at(when, self._signal.wake)

    def _advance_positions(self, reached: Mapping[str, Mapping[int, Position]]) -> None:
        """Record where a claim got to, per queue and priority."""
        for queue, last in reached.items():
            positions = self._positions.setdefault(queue, {})
            positions.update(last)
            if len(positions) > MAX_POSITIONS_PER_QUEUE:
                for priority in sorted(positions)[: len(positions) - MAX_POSITIONS_PER_QUEUE]:
                    del positions[priority]

    def _queue_order(self) -> tuple[str, ...]:
        """The queues, starting one further each claim, so that no queue can starve the
        others (a claim fills its slots from the first queue that has work)."""
        self._rotation = (getattr(self, "_rotation", -1) + 1) % len(self.queues)
        return self.queues[self._rotation :] + self.queues[: self._rotation]

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _release_unstarted(self, jobs: list[ClaimedJob]) -> None:
        if not jobs:
            return
        params = {"ids": [j.id for j in jobs], "leases": [j.lease for j in jobs]}
        try:
            async with self._claim_conn.use() as conn:
                await conn.execute(queries.RELEASE_UNSTARTED, params)
            logger.info("gave %d claimed, unstarted job(s) back to the queue", len(jobs))
        except DATABASE_TROUBLE as exc:
            logger.warning(
                "could not give back %d unstarted job(s) (%s); they will be rescued",
                len(jobs),
                _one_line(exc),
            )

    # -- running --------------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob) -> None:
        started = time.monotonic()
        self.observations.running_changed(job.queue, 1)
        if logger.isEnabledFor(logging.DEBUG):  # one INFO line per job: its outcome
            logger.debug(
                "job %d %s attempt %d/%d running",
                job.id,
                job.task_name,
                job.attempt,
                job.max_attempts,
            )
        if signals.live:
            signals.attempt_started(self.app, job)
        try:
            outcome = await self._attempt(job)
            if job.lease in self._abandoned:  # stopped after its lease was lost (logged then)
                logger.debug(
                    "job %d attempt %d ended, its lease lost: nothing written", job.id, job.attempt
                )
                if signals.live:
                    signals.attempt_ended(self.app, LeaseLost(job), time.monotonic() - started)
                return
            duration = time.monotonic() - started
            mean = self._mean_run
            self._mean_run = (
                duration if mean is None else mean + DURATION_WEIGHT * (duration - mean)
            )
            self.observations.attempt_ended(
                job.queue, job.task_name, outcome.status, job.wait, duration
            )
            try:
                self._log_outcome(outcome, duration)
            except Exception:  # the outcome matters more than its log line
                logger.exception("job %d: could not log its outcome", job.id)
            # The last progress is written first: the outcome moves the row.
            if self.progress_writer.unwritten(job.id):
                await self.progress_writer.flush(job.id)
            if not (isinstance(outcome, LeaseLost) or getattr(outcome, "committed", False)):
                self.completer.submit(outcome)
            if signals.live:  # after the submit: a receiver's time never delays the outcome
                signals.attempt_ended(self.app, outcome, duration)
        finally:
            self._busy_at = time.monotonic()
            self.observations.running_changed(job.queue, -1)
            # Whatever happened above, the slot is given back: this attempt's, not that of a
            # newer claim of the same job (after its lease was lost, the job may be claimed
            # again under this worker's new registration).
            if self._abandoned.pop(job.lease, None) is not None:
                self._signal.wake()
            elif self.running.get(job.id) is asyncio.current_task():
                self.running.pop(job.id, None)
                self._forget(job.id)
            if job.task_name in self._limited_names:  # its place is free: claim again
                self._limited_due = 0.0
                self._signal.wake()
            if self._ahead and not self._stopping.is_set():
                self._start_ahead()
        if self._last_claim_full and self._claim_room() > 0:
            self._signal.wake()

    async def _attempt(self, job: ClaimedJob) -> Outcome | LeaseLost:
        """Run the job; whatever happens, an Outcome."""
        try:
            return await self.executor.run(job, self.cancel_events.get(job.id))
        except asyncio.CancelledError as exc:
            if job.id in self._cancelling:
                return Cancelled(
                    job, simple_error("Cancelled", "cancelled on request while running")
                )
            if self._cancelled_by_this_worker(job.id):
                return self._interrupted(job)
            # The task raised it itself (a library cancelled a child task): a failed attempt,
            # not a shutdown, or the job would come back at once, forever, on every worker.
            return self.executor.failed_attempt(job, exc)
        except BaseException as exc:  # Executor.run turns failures into outcomes; a last net
            logger.exception("job %d %s: unexpected error running it", job.id, job.task_name)
            return Failed(job, error_info(exc))

    def _cancelled_by_this_worker(self, job_id: int) -> bool:
        """Whether the worker cancelled this job's asyncio task (shutdown, cancel request)."""
        if job_id in self._interrupting:
            return True
        # Python 3.11+ counts cancel() calls on a task: one was made, so the CancelledError
        # did not start in the task's own code (asyncio.run cancels what is left at exit).
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        return bool(cancelling is not None and cancelling())

    def _interrupted(self, job: ClaimedJob) -> Outcome:
        """The worker, not the job, cut this attempt short: back to the queue, uncounted."""
        error = simple_error("WorkerShutdown", "the worker stopped before this attempt finished")
        task = self.app.tasks.get(job.task_name)
        # A sync task's thread cannot be stopped and runs on until this process exits: its
        # retry waits long enough that the two can never overlap. (Async tasks are cancelled
        # and pool processes are killed: nothing runs on.)
        on_thread = task is not None and not task.is_async and self.process_pool is None
        delay = INTERRUPTED_THREAD_RETRY_DELAY if on_thread else 0.0
        return RetryLater(job, error, delay=delay, refund_attempt=True)

    @staticmethod
    def _log_outcome(outcome: Outcome | LeaseLost, duration: float) -> None:
        if isinstance(outcome, Succeeded) and not logger.isEnabledFor(logging.INFO):
            return  # below INFO, nothing to build
        job = outcome.job
        # For `--log-format json`: the job's facts as fields, beside the sentence.
        extra = {
            "job_id": job.id,
            "task": job.task_name,
            "queue": job.queue,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "duration": round(duration, 6),
            "outcome": "retry" if isinstance(outcome, RetryLater) else outcome.status,
        }
        if isinstance(outcome, Succeeded):  # the common case, spelled without `head`
            logger.info(
                "job %d %s attempt %d/%d succeeded in %.3fs",
                job.id,
                job.task_name,
                job.attempt,
                job.max_attempts,
                duration,
                extra=extra,
            )
            return
        head = f"job {job.id} {job.task_name} attempt {job.attempt}/{job.max_attempts}"
        if isinstance(outcome, LeaseLost):
            logger.warning(
                "%s finished after %.3fs but lost its lease (rescued and claimed again "
                "elsewhere): its transaction was rolled back",
                head,
                duration,
                extra=extra,
            )
        elif isinstance(outcome, Cancelled):
            logger.warning(
                "%s cancelled after %.3fs: %s",
                head,
                duration,
                outcome.error["message"],
                extra=extra,
            )
        elif isinstance(outcome, RetryLater) and outcome.error["type"] == "UnknownTask":
            logger.warning(
                "%s: %s; back in the queue for %.0fs, attempt not counted",
                head,
                outcome.error["message"],
                outcome.delay,
                extra=extra,
            )
        elif isinstance(outcome, RetryLater) and outcome.refund_attempt:
            logger.warning(
                "%s interrupted after %.3fs by the shutdown: back in the queue, "
                "attempt not counted",
                head,
                duration,
                extra=extra,
            )
        elif isinstance(outcome, RetryLater):
            when = f"at {outcome.eta.isoformat()}" if outcome.eta else f"in {outcome.delay:.2f}s"
            logger.warning(
                "%s failed in %.3fs, retry %s: %s: %s",
                head,
                duration,
                when,
                outcome.error["type"],
                outcome.error["message"],
                extra=extra,
            )
        else:
            logger.error(
                "%s failed in %.3fs: %s: %s",
                head,
                duration,
                outcome.error["type"],
                outcome.error["message"],
                extra=extra,
            )

    async def _finish_running_jobs(self) -> None:
        """Let running jobs finish until the grace period ends or a second signal comes;
        then interrupt what is left (each turns itself into a retry outcome)."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        force = asyncio.create_task(self._force.wait())
        try:
            while self.running and not self._force.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "shutdown timeout of %gs reached with %d job(s) still running",
                        self.settings.shutdown_timeout,
                        len(self.running),
                    )
                    break
                await asyncio.wait(
                    {*self.running.values(), force},
                    timeout=left,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            force.cancel()
        remaining = [*self.running.values(), *self._abandoned.values()]
        for job_id, task in list(self.running.items()):
            self._interrupting.add(job_id)
            task.cancel()
        for task in self._abandoned.values():
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)

    # -- maintenance ----------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Rescues, expiries, missed cancel requests and pruning every `rescue_interval`, and
        the outcome rollup written at least every STATS_FLUSH_INTERVAL; until stopped."""
        conn = self._connection.lane()
        began = time.monotonic()
        next_pass = began
        next_stats_prune = began
        next_prune = began + self.settings.prune_interval / 4
        next_orphan_check = began  # at once: a worker that exited may have left some
        next_stray_check = began + STRAY_CHECK_INTERVAL
        try:
            while not self._maintenance_done.is_set():
                if time.monotonic() >= next_pass:
                    if time.monotonic() >= next_prune:
                        behind = await self._prune(conn)
                        # Behind (a pass stopped at its limit): go on at the next pass.
                        next_prune = time.monotonic() + (
                            0 if behind else self.settings.prune_interval
                        )
                    next_orphan_check, next_stray_check = await self._maintenance_pass(
                        conn, next_orphan_check, next_stray_check
                    )
                    next_pass = time.monotonic() + self.settings.rescue_interval * (
                        self._signal.spread()
                    )
                await self._write_stats(conn)
                await self._rest()
                if time.monotonic() >= next_stats_prune:
                    await self._prune_stats(conn)
                    next_stats_prune = time.monotonic() + STATS_PRUNE_INTERVAL
                pause = min(next_pass - time.monotonic(), STATS_FLUSH_INTERVAL)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._maintenance_done.wait(), max(pause, 0.0))
        finally:
            await conn.close()

    async def _maintenance_pass(
        self, conn: ConnectionLane, next_orphan_check: float, next_stray_check: float
    ) -> tuple[float, float]:
        """One pass of rescues, expiries and missed cancel requests; returns when the orphan
        and stray checks are due next."""
        orphan_check = time.monotonic() >= next_orphan_check
        try:
            # One turn on the shared connection, in one transaction: what the rescue reads
            # of pg_locks needs the planner's usual settings.
            async with conn.use(usual_planning=True) as db:
                rescued = await rescue_lost_jobs(
                    db,
                    lock_grace=self.settings.lock_grace,
                    heartbeat_timeout=self.settings.heartbeat_timeout,
                )
                if orphan_check:
                    rescued += await rescue_orphaned_jobs(db)
                    next_orphan_check = time.monotonic() + ORPHAN_CHECK_INTERVAL
                expired = await expire_queued_jobs(db)
                worker_id = self.presence.worker_id
                asked = await cancel_requests_for(db, worker_id or 0)
        except DATABASE_TROUBLE as exc:
            logger.warning("maintenance pass failed: %s", _one_line(exc))
            await conn.reset()
            rescued, expired, asked = [], [], []
        for row in expired:
            logger.info(
                "job %d %s expired before it started: CANCELLED",
                row["id"],
                row["task_name"],
            )
        for job_id in asked:
            self._cancel_running(job_id)
        if time.monotonic() >= next_stray_check:
            await self._give_back_strays(conn)
            next_stray_check = time.monotonic() + STRAY_CHECK_INTERVAL
        self.observations.rescued(len(rescued))
        for row in rescued:
            log = logger.error if row["status"] == "failed" else logger.warning
            log(
                "job %d %s attempt %d/%d: its worker was lost; %s",
                row["id"],
                row["task_name"],
                row["attempts"],
                row["max_attempts"],
                "no attempts left, FAILED" if row["status"] == "failed" else "back in the queue",
                extra={
                    "job_id": row["id"],
                    "task": row["task_name"],
                    "attempt": row["attempts"],
                    "outcome": "rescued",
                },
            )
        if any(row["status"] == "queued" for row in rescued):
            self._signal.wake()
        if rescued and signals.live:
            signals.rescued(rescued)
        return next_orphan_check, next_stray_check

    async def _rest(self) -> None:
        """Once no job has run for REST_AFTER seconds, close the connections the tasks
        opened (a task that needs one again opens it anew)."""
        if self._at_rest or self.free_slots() < self.concurrency:  # a job still runs
            return
        if time.monotonic() - self._busy_at < REST_AFTER:
            return
        self._at_rest = True
        try:
            # Every thread's first, before this coroutine yields: until then no job can start.
            self.app.close()
            loop_conn = self.app._take_loop_connection()
            if loop_conn is not None:
                await loop_conn.close()
            await self.executor.transactional.aclose()
        except Exception as exc:  # a connection that fails to close is gone all the same
            logger.debug("closing the tasks' idle connections: %s", _one_line(exc))

    async def _write_stats(self, conn: ConnectionLane) -> None:
        """Write the outcome rollup; a failure keeps the counts for the next write."""
        if not self.observations.unwritten:
            return  # no turn on the shared connection for nothing
        try:
            async with conn.use(usual_planning=True) as db:
                await self.observations.flush(db)
        except DATABASE_TROUBLE as exc:
            logger.warning("could not write the outcome rollup: %s", _one_line(exc))
            await conn.reset()
        except Exception:  # bookkeeping must never stop the worker
            logger.exception("could not write the outcome rollup")

    async def _prune_stats(self, conn: ConnectionLane) -> None:
        try:
            async with conn.use(usual_planning=True) as db:
                await db.execute(queries.PRUNE_STATS)
        except DATABASE_TROUBLE as exc:
            logger.warning("could not prune the outcome rollup: %s", _one_line(exc))
            await conn.reset()

    async def _write_last_stats(self) -> None:
        """At exit: write what the maintenance loop has not (on the shared connection, idle
        now)."""
        for last_try in (False, True):
            if not self.observations.unwritten:
                return
            try:
                async with self._claim_conn.use(usual_planning=True) as conn:
                    await asyncio.wait_for(self.observations.flush(conn), FINAL_FLUSH_TIMEOUT)
            except (*DATABASE_TROUBLE, asyncio.TimeoutError) as exc:
                if last_try:
                    logger.warning(
                        "could not write the last %d attempt(s) to the outcome rollup: %s",
                        self.observations.unwritten,
                        _one_line(exc),
                    )
                # The shared connection may have been lost while idle: once more on a new one.
                await self._claim_conn.reset()

    async def _give_back_strays(self, conn: ConnectionLane) -> None:
        """Give back jobs the database says this worker holds but it does not run: their
        claim committed, but its reply was lost with the connection. Only jobs claimed more
        than STRAY_AGE seconds ago count, so a claim whose reply is on its way is never one."""
        worker_id = self.presence.worker_id
        if worker_id is None:
            return
        try:
            # In one turn on the shared connection, which a claim holds from its statement to
            # its reply: no claim is under way meanwhile, and the jobs of every claim whose
            # reply came are in `running` already (the claimer records them before it next
            # yields). A held job the worker does not know was claimed by a claim whose reply
            # was lost. (One the claimer is giving back at this moment may be given back
            # twice: the second finds it queued, and does nothing.)
            async with conn.use(usual_planning=True) as db:
                held = await jobs_held_by(db, worker_id, STRAY_AGE)
                known = set(self.running) | self.completer.pending_ids()
                known.update(job.id for job, _ in self._ahead)
                strays = [(job_id, lease) for job_id, lease in held if job_id not in known]
                if not strays:
                    return
                await db.execute(
                    queries.RELEASE_UNSTARTED,
                    {"ids": [j for j, _ in strays], "leases": [lease for _, lease in strays]},
                )
        except DATABASE_TROUBLE as exc:
            logger.warning("checking for stray claims failed: %s", _one_line(exc))
            await conn.reset()
            return
        logger.warning(
            "gave back %d job(s) whose claim reached the database but not this worker: %s",
            len(strays),
            ", ".join(str(j) for j, _ in strays),
        )

    async def _prune(self, conn: ConnectionLane) -> bool:
        """One bounded pruning pass (finished jobs unless retention is 0, and past workers);
        True if it stopped at its limit with more to delete."""
        deleted = 0
        try:
            async with conn.use(usual_planning=True) as db:
                await prune_past_workers(db)
            # A turn per batch: claims and outcomes wait for one batch at most.
            for _ in range(PRUNE_BATCHES_PER_PASS if self.settings.retention else 0):
                async with conn.use(usual_planning=True) as db:
                    batch = await prune_finished_jobs(
                        db, self.settings.retention, batch=PRUNE_BATCH, max_batches=1
                    )
                deleted += batch
                if batch < PRUNE_BATCH:
                    break
        except DATABASE_TROUBLE as exc:
            logger.warning("pruning failed: %s", _one_line(exc))
            await conn.reset()
            return False
        if deleted:
            logger.info(
                "pruned %d job(s) finished more than %gs ago", deleted, self.settings.retention
            )
        return deleted >= PRUNE_BATCH * PRUNE_BATCHES_PER_PASS

    async def _unregister(self) -> None:
        if self.presence.worker_id is None:
            return
        try:
            async with self._claim_conn.use() as conn:
                await conn.execute(
                    queries.UNREGISTER_WORKER, {"worker_id": self.presence.worker_id}
                )
        except DATABASE_TROUBLE as exc:
            logger.warning("could not unregister the worker: %s", _one_line(exc))
