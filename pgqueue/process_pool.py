"""The process pool (`pgqueue worker --pool process`): sync tasks run in child processes, so a
CPU-bound load uses every core, and an attempt past its timeout is ended by terminating the
process that runs it.

Each child is started with the spawn method (it inherits none of the worker's threads, locks
or connections), imports the app itself, and runs one job at a time, deciding the Outcome with
the same code as the thread pool. The worker's event loop waits on the children's pipes. A
child that dies during a job (segfault, out-of-memory kill, `os._exit`) is replaced, and its
job is retried, or ends FAILED ("WorkerLost") when no attempts remain: a job that kills its
process cannot take the worker down. Async tasks still run on the worker's event loop.

The progress a task publishes in a child is sent to the worker, which writes it as for any
task: the child keeps the latest value and a thread of its own sends it at most every
`progress_interval` seconds, and the last one before the job's outcome.

Children ignore SIGINT and SIGTERM: the worker decides when they stop (a Ctrl-C or a service
manager signals the whole process group, and the warm shutdown must let jobs finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from multiprocessing.context import SpawnProcess
from typing import TYPE_CHECKING, Any

from pgqueue.errors import ConfigurationError
from pgqueue.outcome import (
    ClaimedJob,
    Failed,
    LeaseLost,
    Outcome,
    RetryLater,
    error_info,
    simple_error,
    storable_text,
)

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.progress import ProgressSink
    from pgqueue.tasks import Task

logger = logging.getLogger("pgqueue.worker")

START_TIMEOUT = 120.0


class _ProgressRelay:
    """In a child: the latest progress of its job, sent to the worker (a `("progress", id,
    lease, JSON)` message) by a thread of its own, at most every `interval` seconds; `send`
    sends what is left before the outcome. Every message to the worker goes under one lock,
    so a value is never sent after the outcome of its job."""

    def __init__(self, conn: multiprocessing.connection.Connection, interval: float) -> None:
        self.conn = conn
        self.sending = threading.RLock()
        self._interval = interval
        self._latest: tuple[int, int, str] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, job_id: int, lease: int, value_json: str) -> None:
        with self._lock:
            self._latest = (job_id, lease, value_json)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pgqueue-progress", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def take(self, job_id: int) -> tuple[int, str] | None:
        with self._lock:
            latest = self._latest
            if latest is None or latest[0] != job_id:
                return None
            self._latest = None
            return latest[1], latest[2]

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(OSError):  # the worker is gone: so is the job
                self.send()
            time.sleep(self._interval)  # the coalescing window

    def send(self) -> None:
        with self.sending:
            with self._lock:
                latest, self._latest = self._latest, None
            if latest is not None:
                self.conn.send(("progress", *latest))


def _child_main(
    app_path: str,
    dsn: str,
    conn: multiprocessing.connection.Connection,
    progress_interval: float = 0.25,
) -> None:
    """A child's life: load the app, then run the jobs the worker sends until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pgqueue._loading import load_app
    from pgqueue.execute import run_in_this_process
    from pgqueue.transactional import TransactionalConnections

    try:
        app = load_app(app_path)
        app.set_dsn(dsn)
        app.set_as_current()
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    pool = TransactionalConnections(app)
    relay = _ProgressRelay(conn, progress_interval)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the worker is gone
            return
        if job is None:
            return
        try:
            outcome: Outcome | LeaseLost = run_in_this_process(app, job, pool, relay)
        except BaseException as exc:  # it never raises; if it did, the job still ends
            outcome = Failed(job, error_info(exc))
        try:
            with relay.sending:
                with contextlib.suppress(OSError):
                    relay.send()
                conn.send(outcome)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # the outcome could not be pickled: nothing was sent
            conn.send(
                Failed(
                    job,
                    simple_error(
                        "OutcomeNotStored",
                        f"this attempt's {outcome.status} outcome could not be sent to the "
                        f"worker: {type(exc).__name__}: {storable_text(str(exc), 2000)}",
                    ),
                )
            )


class _Child:
    def __init__(self, process: SpawnProcess, conn: multiprocessing.connection.Connection):
        self.process = process
        self.conn = conn

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.conn.close()

    async def receive(self) -> Any:
        """The child's next message, waiting on its pipe without blocking the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if future.done():
                return
            try:
                future.set_result(self.conn.recv())
            except BaseException as exc:  # EOFError when the child died
                future.set_exception(exc)

        loop.add_reader(fd, readable)
        try:
            return await future
        finally:
            loop.remove_reader(fd)


# How often a child that closed its pipe is looked at until it exits.
EXIT_POLL_SECONDS = 0.01


async def _exit_code(process: SpawnProcess, wait: float) -> int | None:
    """The child's exit code once it has exited, or None if it still runs after `wait`
    seconds; the event loop runs on meanwhile. Not `process.join()`: that blocks, and for as
    long as the child lives when the child closed its end of the sentinel pipe (a task that
    closes every descriptor does), whatever its timeout."""
    deadline = asyncio.get_running_loop().time() + wait
    while process.exitcode is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(EXIT_POLL_SECONDS)  # exitcode reaps without blocking (WNOHANG)
    return process.exitcode


class ProcessPool:
    """`size` child processes running sync tasks, one job each at a time."""

    def __init__(self, app: App, app_path: str, size: int) -> None:
        self.app = app
        self.app_path = app_path
        self.size = size
        self._context = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closing = False
        # Where the children's progress messages go (the worker's writer).
        self.progress: ProgressSink | None = None
        self.progress_interval = 0.25

    async def start(self) -> None:
        """Start every child and wait until each has loaded the app."""
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def _spawn(self) -> None:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_child_main,
            args=(self.app_path, self.app.dsn, child_end, self.progress_interval),
            name="pgqueue-process",
            daemon=True,
        )
        process.start()
        child_end.close()
        child = _Child(process, parent_end)
        self._children.add(child)
        try:
            kind, detail = await asyncio.wait_for(child.receive(), START_TIMEOUT)
        except (EOFError, OSError, asyncio.TimeoutError):
            kind, detail = "failed", f"it exited with code {process.exitcode}"
        if kind != "ready":
            self._discard(child)
            raise ConfigurationError(
                f"a process of the process pool could not load --app {self.app_path}: {detail}"
            )
        if self._closing:
            self._discard(child)
            return
        self._idle.put_nowait(child)

    def _discard(self, child: _Child) -> None:
        child.kill()
        self._children.discard(child)

    def _replace(self, child: _Child) -> None:
        """Kill a child (it timed out, was cancelled, or died) and start another in its place."""
        self._discard(child)
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._spawn())
        self._spawning.add(task)
        task.add_done_callback(self._spawned)

    def _spawned(self, task: asyncio.Task[None]) -> None:
        self._spawning.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("could not replace a process of the pool: %s", task.exception())

    async def run(self, task: Task[Any, Any], job: ClaimedJob) -> Outcome | LeaseLost:
        """Run a sync task's job in a child; the timeout terminates the child."""
        from pgqueue.execute import TaskTimeout, outcome_of_exception

        child = await self._idle.get()
        try:
            child.conn.send(job)
            outcome = await asyncio.wait_for(self._outcome(child), task.timeout)
        except asyncio.TimeoutError:
            self._replace(child)
            assert task.timeout is not None
            timeout = TaskTimeout(
                f"attempt ran past the task's timeout of {task.timeout:g} s; "
                "its process was terminated"
            )
            return outcome_of_exception(task, job, timeout)
        except asyncio.CancelledError:  # shutdown or cancellation: stop the work at once
            self._replace(child)
            raise
        except (EOFError, OSError):
            code = await _exit_code(child.process, 5.0)
            self._replace(child)
            return self._lost(task, job, code)
        self._idle.put_nowait(child)
        return outcome

    async def _outcome(self, child: _Child) -> Outcome | LeaseLost:
        """The child's outcome for its job; the progress it sends meanwhile is passed on."""
        while True:
            message = await child.receive()
            if isinstance(message, tuple) and message and message[0] == "progress":
                _, job_id, lease, value_json = message
                if self.progress is not None:
                    self.progress.publish(job_id, lease, value_json)
                continue
            return message  # type: ignore[no-any-return]

    @staticmethod
    def _lost(task: Task[Any, Any], job: ClaimedJob, exitcode: int | None) -> Outcome:
        how = (
            f"was killed by signal {-exitcode}"
            if exitcode and exitcode < 0
            else (f"exited with code {exitcode}")
        )
        error = simple_error("WorkerLost", f"the process running this attempt {how}")
        policy = task.retry_policy
        if policy.can_retry(job.attempt):
            return RetryLater(job, error, delay=policy.next_delay(job.attempt))
        return Failed(job, error)

    async def close(self) -> None:
        """Stop every child: idle ones are asked to exit, busy ones are killed."""
        self._closing = True
        for task in list(self._spawning):
            task.cancel()
        while not self._idle.empty():
            child = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                child.conn.send(None)
        for child in list(self._children):
            await _exit_code(child.process, 2.0)
            self._discard(child)
