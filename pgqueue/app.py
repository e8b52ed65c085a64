"""App: the object users hold. Settings, the task registry and pgqueue's own connections.

>>> app = pgqueue.App()            # DSN from PGQUEUE_DSN / DATABASE_URL, else embedded
>>> @app.task
... def add(a: int, b: int) -> int:
...     return a + b
>>> add.delay(2, 3).wait(timeout=10)
5
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ConnStatus
from psycopg.rows import dict_row

from pgqueue import _embedded, queries, shared
from pgqueue._fast_insert import FastInsert
from pgqueue._names import NOTIFY_FINISHED, NOTIFY_PROGRESS
from pgqueue.config import (
    DEFAULT_QUEUE,
    hide_password,
    normalize_dsn,
    resolve_dsn,
    resolve_transaction_pooling,
)
from pgqueue.enqueue import JobRequest, translate_error
from pgqueue.errors import ConfigurationError, DatabaseUnavailable, JobNotFound
from pgqueue.hooks import AttemptWrapper, EnqueueHook, Hooks
from pgqueue.job import Job, JobStatus
from pgqueue.limits import declared_limits
from pgqueue.retry import DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS, RetryPolicy
from pgqueue.schedule import DEFAULT_MAX_CATCH_UP, Schedule
from pgqueue.tasks import Task, default_task_name
from pgqueue.unique import UniqueSpec

if TYPE_CHECKING:
    from pgqueue.canvas import Signature
    from pgqueue.workflows import Workflow

F = TypeVar("F", bound=Callable[..., Any])

# Job.wait() is woken by NOTIFY; it re-reads the rows this often anyway, in case a
# notification was lost with a connection.
WAIT_RECHECK_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
# For a connection that must fail when the network does rather than hang (the worker's
# listening session, which carries its heartbeat): TCP keepalives probe an idle connection
# after 5 s and give up after 3 unanswered probes 2 s apart; tcp_user_timeout (milliseconds)
# fails a send the server does not acknowledge within 10 s. Unix sockets ignore them all.
KEEPALIVE_PARAMS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


class App:
    """Settings, the task registry and the connection factory.

    `dsn`: a libpq DSN or URL (SQLAlchemy-style `postgresql+psycopg://` is accepted). Without
    one, `PGQUEUE_DSN`, then `DATABASE_URL`, then the embedded development database are used.

    `listen_dsn`: where a worker keeps its one session-bound connection (LISTEN, its session
    advisory lock, its heartbeat) and where `Job.wait()` listens; else `PGQUEUE_LISTEN_DSN`,
    else `dsn`. Behind a pooler in transaction mode it must reach the server directly (or
    through a pooler in session mode).

    `transaction_pooling`: `dsn` goes through a pooler in transaction mode (PgBouncer with
    `pool_mode = transaction`): pgqueue's own connections then prepare no statements and set
    no session settings; else `PGQUEUE_TRANSACTION_POOLING` (1/0), else False.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        default_queue: str = DEFAULT_QUEUE,
        listen_dsn: str | None = None,
        transaction_pooling: bool | None = None,
    ) -> None:
        self._dsn_argument = dsn
        self._dsn: str | None = None
        self._listen_dsn_argument = listen_dsn
        self._transaction_pooling_argument = transaction_pooling
        self.default_queue = default_queue
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        self._local = threading.local()
        # Every thread's shared connection (and the process that opened it), for close().
        self._thread_conns: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._async_conns: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, psycopg.AsyncConnection[Any]
        ] = weakref.WeakKeyDictionary()
        # Set only by `pgqueue.testing.eager(app)`: delay() then calls it instead of enqueueing
        # (task, request, called from async code) and returns what it returns.
        self._eager: Callable[[Task[Any, Any], JobRequest, bool], Any] | None = None
        self._hooks = Hooks()
        shared.register_app(self)  # every shared task, and this App becomes the current one

    def __repr__(self) -> str:
        return f"<pgqueue.App tasks={len(self.tasks)}>"

    # -- settings -------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The DSN in use; resolving it may start the embedded development database."""
        if self._dsn is None:
            self._dsn = resolve_dsn(self._dsn_argument) or _embedded.embedded_dsn()
        return self._dsn

    @property
    def listen_dsn(self) -> str:
        """The DSN of the session-bound connections (a worker's LISTEN, lock and heartbeat;
        `Job.wait()`): `listen_dsn`, else `PGQUEUE_LISTEN_DSN`, else `dsn`."""
        chosen = self._listen_dsn_argument or os.environ.get("PGQUEUE_LISTEN_DSN")
        return normalize_dsn(chosen) if chosen else self.dsn

    @property
    def has_own_listen_dsn(self) -> bool:
        """Whether the session-bound connections go elsewhere than `dsn`."""
        return self.listen_dsn != self.dsn

    def set_listen_dsn(self, dsn: str) -> None:
        """Keep the session-bound connections on another DSN (`pgqueue worker --listen-dsn`)."""
        self._listen_dsn_argument = dsn

    @property
    def transaction_pooling(self) -> bool:
        """Whether `dsn` goes through a pooler in transaction mode (see the class docstring)."""
        return resolve_transaction_pooling(self._transaction_pooling_argument)

    def set_dsn(self, dsn: str) -> None:
        """Point the app at another database (what `pgqueue --dsn` does)."""
        self.close()
        self._dsn_argument = dsn
        self._dsn = None

    def set_as_current(self) -> None:
        """Make this App the one shared tasks (`pgqueue.shared_task`) enqueue through.

        The current App is the App created last, or the one chosen here since, whichever came
        later (`pgqueue.current_app()`). A worker makes its App current; a process with one
        App never needs this.
        """
        shared.set_current(self)

    @property
    def uses_embedded_database(self) -> bool:
        return resolve_dsn(self._dsn_argument) is None

    # -- tasks ----------------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_backoff: bool | float = True,
        retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_jitter: bool = True,
        autoretry_for: Iterable[type[BaseException]] = (),
        timeout: float | timedelta | None = None,
        transactional: bool = False,
        bind: bool = False,
        unique: UniqueSpec = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
        rate_limit: str | None = None,
        concurrency_limit: int | None = None,
        key_concurrency_limit: int | None = None,
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_backoff: bool | float = True,
        retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_jitter: bool = True,
        autoretry_for: Iterable[type[BaseException]] = (),
        timeout: float | timedelta | None = None,
        transactional: bool = False,
        bind: bool = False,
        unique: UniqueSpec = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
        rate_limit: str | None = None,
        concurrency_limit: int | None = None,
        key_concurrency_limit: int | None = None,
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Register a function (sync or async) as a task; usable bare or with options.

        `max_attempts` counts every run, including the first. Failures are retried only for
        exception types in `autoretry_for`, or when the task raises `pgqueue.Retry`; the wait
        before attempt n+1 is a random time up to `retry_backoff * 2**(n-1)` seconds, capped at
        `retry_backoff_max` (no randomness with `retry_jitter=False`). `timeout` limits one
        attempt, in seconds. `transactional=True` runs the task in a transaction that also
        commits its job's completion: see `pgqueue.current_job().connection`. `bind=True`
        passes the Task as the first argument (`self.request`, `self.retry()`), as in Celery.

        `unique=` makes its jobs unique by a key made from their arguments: True (the task's
        name and every argument), a tuple of argument names, or a function of the arguments
        that returns the key. While a job holding the key is queued or running, an enqueue
        returns it instead of inserting (`job.created` False); `on_conflict="replace"` gives
        the queued one the new arguments instead (debounce); `unique_for=` (seconds) also
        holds the key for that long after the enqueue of the job that took it;
        `unique_states=("queued",)` has only a queued job hold the key (one job waits per key,
        while another may run).
        Limits hold across every worker at once (docs/workflows.md): `rate_limit="100/m"`
        (N per `s`, `m` or `h`: no window of that length holds more starts),
        `concurrency_limit=N` (at most N of its jobs run at once), `key_concurrency_limit=N`
        (at most N run at once per `concurrency_key=` given at enqueue).
        """
        limits = declared_limits(rate_limit, concurrency_limit, key_concurrency_limit)

        def register(function: F) -> Task[Any, Any]:
            if isinstance(function, Task):
                raise ConfigurationError(
                    f"{function.name} is a task already: put @app.periodic above @app.task"
                )
            if isinstance(function, shared.SharedTask):
                raise ConfigurationError(
                    f"{function.name} is a shared task already, which every App knows: drop "
                    "@app.task (and put @app.periodic above @pgqueue.shared_task)"
                )
            policy = RetryPolicy.from_options(
                max_attempts=max_attempts,
                retry_backoff=retry_backoff,
                retry_backoff_max=retry_backoff_max,
                retry_jitter=retry_jitter,
                autoretry_for=tuple(autoretry_for),
            )
            task: Task[Any, Any] = Task(
                self,
                function,
                name=name,
                queue=queue or self.default_queue,
                priority=priority,
                retry_policy=policy,
                timeout=timeout,
                transactional=transactional,
                bind=bind,
                unique=unique,
                unique_for=unique_for,
                on_conflict=on_conflict,
                unique_states=unique_states,
                limits=limits,
            )
            if shared.shared_task_named(task.name) is not None:
                raise ConfigurationError(
                    f"{task.name!r} is the name of a shared task (@pgqueue.shared_task), which "
                    "every App knows; give this task another name="
                )
            existing = self.tasks.get(task.name)
            if existing is not None and existing.fn is not function:
                raise ConfigurationError(
                    f"two tasks are named {task.name!r}; give one of them another name="
                )
            self.tasks[task.name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        catch_up: str = "latest",
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
    ) -> Callable[[Any], Task[Any, Any] | shared.SharedTask[Any, Any]]:
        """Run a task on a schedule: `cron=` (5 fields, in time zone `tz`) or `every=`.

        Put it above `@app.task`, or straight on a function (which is then registered as a
        task with default options). Stack it for several schedules. Invalid cron expressions,
        unknown time zones and non-positive intervals are refused here, at declaration.
        `catch_up` says what happens to ticks missed while no scheduler ran: "latest" (run
        the most recent one, the default), "skip" (run none), or "all" (run each, up to
        `max_catch_up`). Above `@pgqueue.shared_task`, the schedule is this App's.

        >>> @app.periodic(cron="0 3 * * *", tz="Europe/Paris")
        ... @app.task
        ... def nightly_report() -> None: ...
        """

        def declare(target: Any) -> Task[Any, Any] | shared.SharedTask[Any, Any]:
            known = isinstance(target, (Task, shared.SharedTask))  # this App has it already
            task_name = target.name if known else default_task_name(target)
            spec = cron if cron is not None else f"every {every}"
            # Validated before the task is registered: a bad declaration changes nothing.
            schedule = Schedule(
                name=name or f"{task_name} [{spec}]",
                task_name=task_name,
                cron=cron,
                every=every.total_seconds() if isinstance(every, timedelta) else every,
                tz=tz,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                queue=queue,
                priority=priority,
                catch_up=catch_up,
                max_catch_up=max_catch_up,
            )
            existing = self.schedules.get(schedule.name)
            if existing is not None and existing != schedule:
                raise ConfigurationError(
                    f"two periodic schedules are named {schedule.name!r}; give one a name="
                )
            task: Task[Any, Any] | shared.SharedTask[Any, Any] = (
                target if known else self.task(target)
            )
            self.schedules[schedule.name] = schedule
            return task

        return declare

    # -- instrumentation (see pgqueue.hooks) ----------------------------------------------

    def add_enqueue_hook(self, hook: EnqueueHook) -> None:
        """Enter `hook(enqueueing)`, a context manager, around each enqueue call of this app's
        tasks: it may add headers to the jobs, and sees their ids once they are written.
        Installing the same hook twice installs it once (see `pgqueue.hooks`)."""
        self._hooks.add("enqueue hook", hook)

    def remove_enqueue_hook(self, hook: EnqueueHook) -> bool:
        """Stop entering `hook`; False if it was not installed."""
        return self._hooks.remove("enqueue hook", hook)

    def add_attempt_wrapper(self, wrapper: AttemptWrapper) -> None:
        """Enter `wrapper(attempt)`, a context manager, around each attempt of this app's
        tasks, where the task function runs (see `pgqueue.hooks`)."""
        self._hooks.add("attempt wrapper", wrapper)

    def remove_attempt_wrapper(self, wrapper: AttemptWrapper) -> bool:
        """Stop entering `wrapper`; False if it was not installed."""
        return self._hooks.remove("attempt wrapper", wrapper)

    def queues(self) -> tuple[str, ...]:
        """The queues this app's tasks use, plus the default queue: what a worker serves."""
        names = {self.default_queue, *(task.queue for task in self.tasks.values())}
        return tuple(sorted(names))

    # -- connections ----------------------------------------------------------------------

    def _connect_kwargs(self, keepalives: bool = False, listen: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        dsn = self.listen_dsn if listen else self.dsn
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            what = "invalid listen DSN: " if listen and self.has_own_listen_dsn else "invalid DSN: "
            raise ConfigurationError(
                what + hide_password(" ".join(str(exc).split()), dsn)
            ) from None
        if self.transaction_pooling and not (listen and self.has_own_listen_dsn):
            # A transaction pooler runs each transaction on whichever server connection is
            # free: a statement psycopg prepared on one is unknown to the next.
            kwargs["prepare_threshold"] = None
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if "application_name" not in params:
            kwargs["application_name"] = "pgqueue"
        if keepalives:  # what the DSN sets wins
            kwargs.update({k: v for k, v in KEEPALIVE_PARAMS.items() if k not in params})
        return kwargs

    def connect(
        self, *, autocommit: bool = False, keepalives: bool = False
    ) -> psycopg.Connection[Any]:
        """A new psycopg connection to this app's database (the caller closes it).

        `keepalives=True` sets TCP keepalives and a TCP user timeout (KEEPALIVE_PARAMS, unless
        the DSN sets them), so that a connection whose network is gone fails within seconds
        instead of hanging.
        """
        try:
            return psycopg.connect(
                self.dsn, autocommit=autocommit, **self._connect_kwargs(keepalives)
            )
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    def connect_listen(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new connection to `listen_dsn`, with keepalives (see `connect()`): for session
        state that must outlive a transaction (LISTEN, session advisory locks)."""
        try:
            return psycopg.connect(
                self.listen_dsn,
                autocommit=autocommit,
                **self._connect_kwargs(keepalives=True, listen=True),
            )
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc, self.listen_dsn) from None

    async def aconnect_listen(self) -> psycopg.AsyncConnection[Any]:
        """Async twin of `connect_listen(autocommit=True)`."""
        try:
            return await psycopg.AsyncConnection.connect(
                self.listen_dsn, autocommit=True, **self._connect_kwargs(True, listen=True)
            )
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc, self.listen_dsn) from None

    async def aconnect(self, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
        """Async twin of `connect()`."""
        try:
            return await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=autocommit, **self._connect_kwargs()
            )
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: psycopg.Error, dsn: str | None = None) -> DatabaseUnavailable:
        detail = hide_password(" ".join(str(exc).split()), dsn or self.dsn)
        return DatabaseUnavailable(f"could not connect to the database: {detail}")

    def _shared_connection(self) -> psycopg.Connection[Any]:
        """This thread's autocommit connection, made again if it broke or the process forked."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (self._local.pid != os.getpid() or not idle_connection_ok(conn)):
            with contextlib.suppress(psycopg.Error):
                conn.close()
            conn = None
        if conn is None:
            conn = self.connect(autocommit=True)
            self._local.conn = conn
            self._local.pid = os.getpid()
            self._thread_conns[conn] = os.getpid()
            self._local.insert_cursor = conn.cursor(binary=True)
            # Its statement is prepared once per connection: not behind a transaction pooler.
            self._local.fast_insert = None if self.transaction_pooling else FastInsert(conn)
        return conn

    async def _ashared_connection(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        conn = self._async_conns.get(loop)
        if conn is not None and conn.lock.locked():
            # Another task of this loop is running a statement on it: its reply may be waiting
            # on the socket, which idle_connection_ok would take for a goodbye, and closing the
            # connection under that task crashes it. In use is alive enough: wait for the lock.
            return conn
        if conn is None or not idle_connection_ok(conn):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            conn = await self.aconnect(autocommit=True)
            self._async_conns[loop] = conn
        return conn

    def close(self) -> None:
        """Close the shared connections of every thread (a thread that needs one again opens
        a new one), but for one another thread is running a statement on: that one closes
        when its thread ends."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        for other, pid in list(self._thread_conns.items()):
            # Never one inherited from a parent process: closing it would end the parent's.
            if pid == os.getpid() and not other.closed and not other.lock.locked():
                with contextlib.suppress(psycopg.Error):
                    other.close()

    async def aclose(self) -> None:
        """Close the shared async connection of the running event loop (and this thread's)."""
        conn = self._take_loop_connection()
        if conn is not None:
            await conn.close()
        self.close()

    def _take_loop_connection(self) -> psycopg.AsyncConnection[Any] | None:
        """The running event loop's shared async connection, which it no longer uses (the
        next statement opens another); the caller closes it."""
        return self._async_conns.pop(asyncio.get_running_loop(), None)

    # -- jobs -----------------------------------------------------------------------------

    def _caller_transaction(self) -> Any:
        """The connection whose open transaction a job enqueued without `connection=` joins,
        or None to commit it at once on pgqueue's own connection. None here; a framework's App
        (pgqueue.contrib.django) returns its connection inside the framework's atomic block."""
        return None

    def _insert_committed(self, request: JobRequest) -> dict[str, Any]:
        conn = self._shared_connection()
        try:
            if request.due_now and self._local.fast_insert is not None:  # see _fast_insert
                return request.job_row(self._local.fast_insert.insert(request))
            cursor = self._local.insert_cursor  # kept with the connection: one fewer object
            row = cursor.execute(request.statement, request.params()).fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        assert row is not None
        return request.job_row(row)

    async def _ainsert_committed(self, request: JobRequest) -> dict[str, Any]:
        conn = await self._ashared_connection()
        try:
            cur = await conn.execute(request.statement, request.params(), binary=True)
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        assert row is not None
        return request.job_row(row)

    def _fetch_job_row(self, job_id: int) -> dict[str, Any] | None:
        conn = self._shared_connection()
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(queries.FETCH_JOB, {"id": job_id}).fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc

    async def _afetch_job_row(self, job_id: int) -> dict[str, Any] | None:
        conn = await self._ashared_connection()
        try:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(queries.FETCH_JOB, {"id": job_id})
                return await cur.fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc

    def get_job(self, job_id: int) -> Job:
        """The job with this id, whatever its status; raises JobNotFound."""
        row = self._fetch_job_row(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Job(self, row)

    async def aget_job(self, job_id: int) -> Job:
        """Async twin of `get_job()`."""
        row = await self._afetch_job_row(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Job(self, row)

    def signature(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        external: bool = False,
        **options: Any,
    ) -> Signature:
        """A signature by task name (see `Task.s()`): UnknownTask for a name this app does
        not register, unless `external=True` (only the workers import the task; its jobs go
        to `queue=`, else the app's default queue)."""
        from pgqueue.canvas import signature_of

        return signature_of(
            self, name, args, kwargs, immutable=immutable, external=external, **options
        )

    def get_workflow(self, workflow_id: int) -> Workflow:
        """The workflow with this id and its steps' jobs; raises WorkflowNotFound."""
        from pgqueue.workflows import get_workflow

        return get_workflow(self, workflow_id)

    async def aget_workflow(self, workflow_id: int) -> Workflow:
        """Async twin of `get_workflow()`."""
        from pgqueue.workflows import aget_workflow

        return await aget_workflow(self, workflow_id)

    def cancel(self, job_id: int, reason: str = "cancelled on request") -> bool:
        """Cancel a job by id; see `Job.cancel()`. False if it had already finished."""
        conn = self._shared_connection()
        params = {"id": job_id, "message": reason}
        try:
            decided = conn.execute(queries.CANCEL_JOB, params).fetchone() is not None
            known = decided or conn.execute(queries.FETCH_JOB, params).fetchone() is not None
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        return _cancelled(job_id, decided, known)

    async def acancel(self, job_id: int, reason: str = "cancelled on request") -> bool:
        """Async twin of `cancel()`."""
        conn = await self._ashared_connection()
        params = {"id": job_id, "message": reason}
        try:
            decided = await (await conn.execute(queries.CANCEL_JOB, params)).fetchone() is not None
            known = decided or (
                await (await conn.execute(queries.FETCH_JOB, params)).fetchone() is not None
            )
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        return _cancelled(job_id, decided, known)

    def wait_all(self, jobs: Iterable[Job], timeout: float | None = None) -> None:
        """Block until every job has finished (whatever its outcome), on one connection."""
        self._wait_for_jobs([job.id for job in jobs], timeout)

    def _wait_for_jobs(self, ids: list[int], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.connect_listen(autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_FINISHED}")
            rows = conn.execute(queries.EXISTING_AMONG, {"ids": ids}).fetchall()
            pending = _check_exist(ids, {row[0] for row in rows})
            while True:
                rows = conn.execute(queries.UNFINISHED_AMONG, {"ids": list(pending)}).fetchall()
                pending = {row[0] for row in rows}
                if not pending:
                    return
                wait = _remaining(deadline, timeout, pending)
                for notify in conn.notifies(timeout=wait):
                    if _mentions(notify.payload, pending):
                        break

    async def _await_jobs(self, ids: list[int], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        async with await self.aconnect_listen() as conn:
            await conn.execute(f"LISTEN {NOTIFY_FINISHED}")
            cur = await conn.execute(queries.EXISTING_AMONG, {"ids": ids})
            pending = _check_exist(ids, {row[0] for row in await cur.fetchall()})
            while True:
                cur = await conn.execute(queries.UNFINISHED_AMONG, {"ids": list(pending)})
                pending = {row[0] for row in await cur.fetchall()}
                if not pending:
                    return
                wait = _remaining(deadline, timeout, pending)
                async for notify in conn.notifies(timeout=wait):
                    if _mentions(notify.payload, pending):
                        break

    def _watch_progress(
        self, job_id: int, seen: Any, timeout: float | None
    ) -> Generator[dict[str, Any], None, None]:
        """The job's row each time its progress was written after `seen` (a `progress_at`),
        and once more when it has finished, which ends the iteration. Woken by NOTIFY, on one
        connection; TimeoutError when nothing new comes within `timeout` seconds."""
        with self.connect_listen(autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_PROGRESS}; LISTEN {NOTIFY_FINISHED}")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                with conn.cursor(row_factory=dict_row) as cur:
                    row = cur.execute(queries.FETCH_JOB, {"id": job_id}).fetchone()
                if row is None:
                    raise JobNotFound(f"job {job_id} no longer exists (was it pruned?)")
                finished = JobStatus(row["status"]).is_finished
                if finished or row["progress_at"] != seen:
                    yield row
                    if finished:
                        return
                    seen = row["progress_at"]
                    deadline = None if timeout is None else time.monotonic() + timeout
                wait = _progress_wait(deadline, timeout, job_id)
                for notify in conn.notifies(timeout=wait):
                    if _mentions(notify.payload, {job_id}):
                        break

    async def _awatch_progress(
        self, job_id: int, seen: Any, timeout: float | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Async twin of `_watch_progress`."""
        async with await self.aconnect_listen() as conn:
            await conn.execute(f"LISTEN {NOTIFY_PROGRESS}; LISTEN {NOTIFY_FINISHED}")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(queries.FETCH_JOB, {"id": job_id})
                    row = await cur.fetchone()
                if row is None:
                    raise JobNotFound(f"job {job_id} no longer exists (was it pruned?)")
                finished = JobStatus(row["status"]).is_finished
                if finished or row["progress_at"] != seen:
                    yield row
                    if finished:
                        return
                    seen = row["progress_at"]
                    deadline = None if timeout is None else time.monotonic() + timeout
                wait = _progress_wait(deadline, timeout, job_id)
                async for notify in conn.notifies(timeout=wait):
                    if _mentions(notify.payload, {job_id}):
                        break


def _progress_wait(deadline: float | None, timeout: float | None, job_id: int) -> float:
    if deadline is None:
        return WAIT_RECHECK_SECONDS
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"job {job_id} published no new progress within {timeout} s")
    return min(left, WAIT_RECHECK_SECONDS)


def idle_connection_ok(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection is still usable, without a round trip.

    An idle connection that does not LISTEN has nothing to receive; when the server ends it
    (restart, `pg_terminate_backend`, idle timeout), its goodbye is waiting on the socket. So
    anything readable there means: use a fresh connection (the rare harmless message costs one
    reconnect). Retrying a failed INSERT instead would be unsafe: the first may have committed.
    """
    if conn.broken or conn.closed:
        return False
    try:
        readable = _readable(conn.pgconn.socket)
    except (psycopg.Error, OSError, ValueError):
        return False
    return not readable and conn.pgconn.status == ConnStatus.OK


def _readable(fd: int) -> bool:
    """Whether `fd` has something to read (or was closed) now. poll() where there is one:
    select() refuses descriptors above 1023, which a busy process's sockets reach."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR are reported whatever was asked
    readable, _, _ = select.select([fd], [], [], 0)  # Windows: no such limit for sockets
    return bool(readable)


def _cancelled(job_id: int, decided: bool, known: bool) -> bool:
    """cancel()'s answer: CANCEL_JOB decided (True), or the job had finished (False), or
    there is no such job. Only the one statement decides; the look that follows it only tells
    a finished job from a missing one."""
    if not known:
        raise JobNotFound(f"no job with id {job_id}")
    return decided


def _check_exist(ids: list[int], found: set[int]) -> set[int]:
    """`found` (the ids that exist), or JobNotFound naming the first missing one."""
    missing = sorted(set(ids) - found)
    if missing:
        raise JobNotFound(
            f"no job with id {missing[0]} (a job enqueued with connection= exists only once "
            "that transaction commits)"
        )
    return found


def _remaining(deadline: float | None, timeout: float | None, pending: set[int]) -> float:
    if deadline is None:
        return WAIT_RECHECK_SECONDS
    left = deadline - time.monotonic()
    if left <= 0:
        ids = ", ".join(str(i) for i in sorted(pending)[:5])
        raise TimeoutError(f"job {ids} did not finish within {timeout} s")
    return min(left, WAIT_RECHECK_SECONDS)


def _mentions(payload: str, pending: set[int]) -> bool:
    return any(part.isdigit() and int(part) in pending for part in payload.split(","))
