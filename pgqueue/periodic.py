"""Periodic schedules stored in PostgreSQL: cron/interval -> one job per (schedule, fire time).

Declared schedules are synchronised into `pgqueue_periodic` when a worker or scheduler starts.
Every worker runs the scheduler by default, on its listening connection between two waits for
notifications (`SchedulerPasses`); `pgqueue scheduler` runs it alone. However many run, each
tick makes exactly one job, because jobs carry (periodic_name, periodic_fire_at) under a unique
index. Time is the database's clock, so schedulers on hosts with skewed clocks agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries
from pgqueue.errors import ConfigurationError, PgQueueError
from pgqueue.schedule import ON_TIME_GRACE, Schedule

if TYPE_CHECKING:
    from pgqueue.app import App

logger = logging.getLogger("pgqueue.scheduler")

Conn = psycopg.Connection[Any]

# A schedule that failed (see fire_due) is looked at again after this long: often enough to
# pick it up soon once repaired, seldom enough not to flood the log while it stays broken.
BROKEN_SCHEDULE_RETRY = timedelta(minutes=5)
# A schedule this late, of a task the scheduler's app does not register, is reported (once):
# a scheduler that knows the task fires it within about a second of its tick.
UNFIRED_GRACE = timedelta(minutes=1)
# How often a scheduler looks for such schedules (seconds).
UNFIRED_CHECK_INTERVAL = 60.0


class ScheduleNotFound(PgQueueError):
    """No periodic schedule has this name."""


@dataclass(frozen=True)
class SyncReport:
    added: list[str]
    updated: list[str]
    undeclared: list[str]


@dataclass(frozen=True)
class FiredTick:
    schedule: str
    fire_at: datetime
    job_id: int | None  # None: another scheduler had already made this tick's job


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def sync_schedules(
    conn: Conn, schedules: Iterable[Schedule], now: datetime, task_names: Iterable[str] = ()
) -> SyncReport:
    """Write the app's declared schedules; mark as removed the code schedules of the app's
    tasks (`task_names`) that it no longer declares."""
    added: list[str] = []
    updated: list[str] = []
    names: list[str] = []
    with conn.transaction():
        for schedule in schedules:
            names.append(schedule.name)
            params = {**schedule.definition(), "next_fire_at": schedule.next_tick(now)}
            row = conn.execute(queries.UPSERT_CODE_SCHEDULE, params).fetchone()
            if row is not None:
                (added if row[1] else updated).append(row[0])
        undeclared = [
            row[0]
            for row in conn.execute(
                queries.UNDECLARE_REMOVED_SCHEDULES,
                {"names": names, "task_names": list(task_names)},
            )
        ]
    for name in added:
        logger.info("periodic schedule %s added", name)
    for name in updated:
        logger.info("periodic schedule %s updated", name)
    for name in undeclared:
        logger.warning("periodic schedule %s is no longer declared in code: it stops firing", name)
    return SyncReport(added, updated, undeclared)


def _ticks_to_fire(
    schedule: Schedule, after: datetime, now: datetime
) -> tuple[list[datetime], datetime | None]:
    """(ticks to make jobs for, the latest due tick) per the schedule's catch-up policy."""
    limit = schedule.max_catch_up if schedule.catch_up == "all" else 1
    due = schedule.latest_ticks(after, now, limit)
    if not due:
        return [], None
    latest = due[-1]
    if schedule.catch_up == "skip" and now - latest > ON_TIME_GRACE:
        return [], latest
    return due, latest


def _job_params(app: App, schedule: Schedule, fire_at: datetime | None) -> dict[str, Any]:
    """INSERT_PERIODIC_JOB's parameters: the schedule's job with its task's options (the
    caller has checked that `app` registers the task)."""
    task = app.tasks[schedule.task_name]
    definition = schedule.definition()
    return {
        "queue": schedule.queue or task.queue,
        "task_name": schedule.task_name,
        "args": definition["args"],
        "kwargs": definition["kwargs"],
        "priority": schedule.priority if schedule.priority is not None else task.priority,
        "max_attempts": task.retry_policy.max_attempts,
        "periodic_name": schedule.name,
        "fire_at": fire_at,
        "limited": True if task.limits is not None else None,
    }


def fire_due(
    conn: Conn, app: App, now: datetime | None = None, *, lock: bool = True
) -> list[FiredTick]:
    """One scheduler pass in one transaction: make the jobs of every due tick of the
    schedules whose task `app` registers (the others are left to schedulers that know them).

    `now` defaults to the database's clock; tests pass their own. `lock=False` skips the row
    locks that spare concurrent schedulers duplicate work (the unique index still holds).

    Each schedule is fired under a savepoint of its own: whatever goes wrong with one (a row
    no longer valid, a cron with no next time, a job the database refuses) is logged, undone
    and looked at again after BROKEN_SCHEDULE_RETRY, and the others fire as usual.
    """
    fired: list[FiredTick] = []
    with conn.transaction():
        if now is None:
            now = db_now(conn)
        query = queries.DUE_SCHEDULES if lock else queries.DUE_SCHEDULES_UNLOCKED
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, {"now": now, "task_names": list(app.tasks)}).fetchall()
        for row in rows:
            try:
                with conn.transaction():
                    fired.extend(_fire_schedule(conn, app, row, now))
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the connection, not the schedule: the scheduler reconnects
            except Exception as exc:
                retry_at = now + BROKEN_SCHEDULE_RETRY
                logger.error(
                    "periodic schedule %s failed, skipped until %s: %s: %s",
                    row["name"],
                    retry_at.isoformat(),
                    type(exc).__name__,
                    " ".join(str(exc).split()),
                )
                conn.execute(
                    queries.UPDATE_SCHEDULE_AFTER_FIRE,
                    {
                        "name": row["name"],
                        "last_fire_at": None,
                        "job_id": None,
                        "next_fire_at": retry_at,
                    },
                )
    for made in fired:
        if made.job_id is not None:
            logger.info(
                "periodic schedule %s: tick %s -> job %d",
                made.schedule,
                made.fire_at.isoformat(),
                made.job_id,
            )
    return fired


def _fire_schedule(conn: Conn, app: App, row: dict[str, Any], now: datetime) -> list[FiredTick]:
    """Make the jobs of one schedule's due ticks and move it to its next fire time."""
    schedule = Schedule.from_row(row)
    after = row["last_fire_at"] or (row["next_fire_at"] - timedelta(microseconds=1))
    ticks, latest = _ticks_to_fire(schedule, after, now)
    fired = []
    last_job_id = None
    for tick in ticks:
        params = _job_params(app, schedule, tick)
        made = conn.execute(queries.INSERT_PERIODIC_JOB, params).fetchone()
        job_id = int(made[0]) if made else None
        last_job_id = job_id or last_job_id
        fired.append(FiredTick(schedule.name, tick, job_id))
    if latest is not None and not ticks:
        logger.info(
            "periodic schedule %s: missed tick %s skipped (catch_up=skip)",
            schedule.name,
            latest.isoformat(),
        )
    conn.execute(
        queries.UPDATE_SCHEDULE_AFTER_FIRE,
        {
            "name": schedule.name,
            "last_fire_at": latest,
            "job_id": last_job_id,
            "next_fire_at": schedule.next_tick(now),
        },
    )
    return fired


# -- run-time management (`pgqueue periodic ...`) ----------------------------------------


def list_schedules(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_SCHEDULES).fetchall()


def schedule_state(row: dict[str, Any]) -> str:
    """What a row of list_schedules is: 'enabled', 'disabled', 'removed' (a code schedule no
    longer declared) or 'overdue' (enabled, and over a minute late: no running scheduler
    registers its task, or none runs at all)."""
    if row["source"] == "code" and not row["declared"]:
        return "removed"
    if not row["enabled"]:
        return "disabled"
    return "overdue" if row["overdue"] else "enabled"


def add_schedule(conn: Conn, schedule: Schedule) -> None:
    """Add a run-time schedule; refuses a name that exists."""
    params = {**schedule.definition(), "next_fire_at": schedule.next_tick(db_now(conn))}
    try:
        with conn.transaction():
            conn.execute(queries.INSERT_CLI_SCHEDULE, params)
    except psycopg.errors.UniqueViolation:
        raise ConfigurationError(
            f"a periodic schedule named {schedule.name!r} exists already; pick another name"
        ) from None


def remove_schedule(conn: Conn, name: str, *, force: bool = False) -> None:
    """Delete a schedule. A code-declared one comes back at the next start of an app that
    declares it, so it is refused unless `force`: what a schedule needs whose task was
    removed from the code with it (only an app that registers a task marks its schedules
    removed, so nothing marks that one)."""
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries.GET_SCHEDULE, {"name": name}).fetchone()
        if row is None:
            raise ScheduleNotFound(f"no periodic schedule named {name!r}")
        if row["source"] == "code" and not force:
            raise ConfigurationError(
                f"{name!r} is declared in code and would come back at the next start: "
                "remove it from the code, or `pgqueue periodic disable` it (if its task is "
                "gone from the code too, `pgqueue periodic remove --force` deletes it)"
            )
        conn.execute(queries.DELETE_CLI_SCHEDULE, {"name": name})


def set_enabled(conn: Conn, name: str, enabled: bool) -> None:
    with conn.transaction():
        if (
            conn.execute(
                queries.SET_SCHEDULE_ENABLED, {"name": name, "enabled": enabled}
            ).fetchone()
            is None
        ):
            raise ScheduleNotFound(f"no periodic schedule named {name!r}")


def run_now(conn: Conn, app: App, name: str) -> int:
    """Enqueue the schedule's job now, outside its ticks; returns the job id.

    `app` must register the schedule's task: its queue, priority and attempts are the job's.
    """
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries.GET_SCHEDULE, {"name": name}).fetchone()
        if row is None:
            raise ScheduleNotFound(f"no periodic schedule named {name!r}")
        if row["task_name"] not in app.tasks:
            raise ConfigurationError(
                f"periodic schedule {name!r} runs task {row['task_name']!r}, which this app "
                "does not register: pass --app with the app that defines it (its queue, "
                "priority and attempts make the job)"
            )
        schedule = Schedule.from_row(row)
        made = conn.execute(
            queries.INSERT_PERIODIC_JOB, _job_params(app, schedule, None)
        ).fetchone()
        assert made is not None
        job_id = int(made[0])
        conn.execute(
            queries.UPDATE_SCHEDULE_AFTER_FIRE,
            {
                "name": name,
                "last_fire_at": None,
                "job_id": job_id,
                "next_fire_at": row["next_fire_at"],
            },
        )
    return job_id


def report_unfired_schedules(conn: Conn, app: App, reported: set[str]) -> list[str]:
    """Warn once about each enabled schedule overdue by UNFIRED_GRACE whose task `app` does
    not register: most likely no running scheduler knows it, so it does not fire.

    `reported` holds the names warned about already; a schedule that fires again leaves it,
    so a later stall is reported anew. Returns the names newly reported.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            queries.OVERDUE_FOREIGN_SCHEDULES,
            {"grace": UNFIRED_GRACE.total_seconds(), "task_names": list(app.tasks)},
        ).fetchall()
    overdue = {row["name"] for row in rows}
    reported &= overdue
    new = [row for row in rows if row["name"] not in reported]
    for row in new:
        logger.warning(
            "periodic schedule %s was due at %s and has not fired: no running scheduler "
            "seems to register its task %r (this one does not). It fires once a worker or "
            "`pgqueue scheduler` whose app registers the task runs; or disable it "
            "(`pgqueue periodic disable %s`)",
            row["name"],
            row["next_fire_at"].isoformat(),
            row["task_name"],
            row["name"],
        )
        reported.add(row["name"])
    return [row["name"] for row in new]


# -- the scheduler loop ------------------------------------------------------------------


class SchedulerPasses:
    """The scheduler's work, one pass at a time, on a connection its caller holds: in a
    worker, the listening connection between two waits for notifications (so the scheduler
    costs the worker no connection of its own); alone, `Scheduler`'s.

    A pass syncs the app's schedules the first time, fires the due ticks, now and then warns
    of schedules no scheduler seems to fire, and says how long until the next is due.
    """

    def __init__(
        self, app: App, max_sleep: float = 1.0, spread: Callable[[], float] = lambda: 1.0
    ) -> None:
        self.app = app
        self.max_sleep = max_sleep
        # How many times max_sleep apart the passes are when no tick is due sooner: more
        # than 1 in a large fleet, whose workers share the passes.
        self.spread = spread
        self.synced = threading.Event()
        self._reported: set[str] = set()
        self._next_unfired_check = time.monotonic()
        self._backoff = 0.5

    def run_pass(self, conn: Conn) -> float:
        """One pass; returns the seconds until the next one is due. Raises what the database
        raises."""
        if not self.synced.is_set():
            sync_schedules(conn, self.app.schedules.values(), db_now(conn), self.app.tasks)
            conn.commit()
            self.synced.set()
        fire_due(conn, self.app)
        self._backoff = 0.5  # after a whole pass: a failing one keeps backing off
        if time.monotonic() >= self._next_unfired_check:
            report_unfired_schedules(conn, self.app, self._reported)
            self._next_unfired_check = time.monotonic() + UNFIRED_CHECK_INTERVAL
        return self._sleep_for(conn)

    def run_pass_on_shared(self, conn: Conn) -> float:
        """`run_pass` on a connection that serves more than the scheduler: a failed pass is
        logged and tried again after a backoff; only a connection that broke is raised, for
        its owner to make again."""
        try:
            return self.run_pass(conn)
        except Exception as exc:
            if conn.closed or conn.broken:
                raise
            return self.failed(exc)

    def failed(self, exc: BaseException) -> float:
        """Log a failed pass; returns how long to wait before the next (doubling, to 10 s)."""
        delay = self._backoff
        logger.warning(
            "scheduler: %s; retrying in %.1fs",
            " ".join(str(exc).split()) or type(exc).__name__,
            delay,
        )
        self._backoff = min(self._backoff * 2, 10.0)
        return delay

    def _sleep_for(self, conn: Conn) -> float:
        with conn.transaction():
            row = conn.execute(queries.NEXT_DUE_IN, {"task_names": list(self.app.tasks)}).fetchone()
        longest = self.max_sleep * self.spread()
        due_in = row[0] if row and row[0] is not None else longest
        return max(0.01, min(longest, due_in))


class Scheduler(threading.Thread):
    """`pgqueue scheduler`: the scheduler's passes on a connection of its own, until stopped.
    Reconnects with backoff when the database goes away."""

    def __init__(self, app: App, max_sleep: float = 1.0) -> None:
        super().__init__(name="pgqueue-scheduler", daemon=True)
        self.app = app
        self.passes = SchedulerPasses(app, max_sleep)
        self.synced = self.passes.synced
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                with self.app.connect() as conn:
                    while not self._stop_event.is_set():
                        self._stop_event.wait(self.passes.run_pass(conn))
            except Exception as exc:
                if self._stop_event.is_set():
                    break
                self._stop_event.wait(self.passes.failed(exc))
