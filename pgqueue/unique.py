"""Unique jobs: keys, how a task builds them from its arguments, and the enqueue that honours them.

A job with a unique key is inserted only if no queued or running job holds that key: the
partial unique index pgqueue_jobs_unique_key_idx decides, by INSERT ... ON CONFLICT, so that
enqueuers racing in their own transactions make one job between them. An enqueue that meets
the key returns the job holding it (`job.created` is False), or, with `on_conflict="replace"`,
gives that job its own arguments, due time and options while it is still queued (debounce).
With `unique_for=`, the key is held for a period from the enqueue of the job that took it,
whatever becomes of that job; the period is a row of pgqueue_unique_periods, which outlives
the job's move between tables and whose lock lines up the enqueuers of one key.

With `unique_states=("queued",)`, only a queued job holds the key (in `queued_key`, under the
partial unique index pgqueue_jobs_queued_key_idx): at most one job waits per key, while jobs
of the key may run. A job that goes back to queued keeps such a key only if no queued job
holds it (queries._queued_key_back).

The enqueue itself is written once, as a generator of statements (`_enqueue_steps`) that the
sync and async drivers run on whatever connection the caller gave.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries
from pgqueue.enqueue import (
    PSYCOPG,
    JobRequest,
    _raise_from_sqlalchemy,
    connection_kind,
    translate_error,
)
from pgqueue.errors import ConfigurationError

# A key is stored in a B-tree index, whose entries must stay well under a page: keys are
# limited to this many bytes (UTF-8). Keys a task builds from its arguments that would be
# longer are replaced by a digest of them.
MAX_KEY_BYTES = 512
ON_CONFLICT = ("keep", "replace")
# What `@app.task(unique=...)` takes: True, argument names, or a function returning the key.
UniqueSpec = bool | Sequence[str] | Callable[..., str] | None
MAX_PERIOD = 100 * 366 * 86400.0
# What `unique_states=` takes, as sets: the states in which a job holds its key. The default
# first; the other keeps at most one job waiting per key, while jobs of it run.
STATES = (frozenset({"queued", "running"}), frozenset({"queued"}))
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
# An enqueue retries when the job that made it step aside ended before it could be read;
# more rounds than this means something else is wrong.
MAX_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class UniqueOptions:
    """How one enqueue is unique: its key, its period in seconds (None: only while a job
    holding the key is queued or running), whether it replaces a queued holder, and whether
    only a queued job holds the key (`unique_states=("queued",)`)."""

    key: str
    period: float | None = None
    replace: bool = False
    queued_only: bool = False


def check_key(key: Any) -> str:
    """A unique key as given by the caller: a non-empty string, short enough to index."""
    if not isinstance(key, str):
        raise TypeError(f"unique_key must be a string, got {type(key).__name__}: {key!r:.80}")
    if not key.strip():
        raise ConfigurationError("unique_key must not be empty or blank")
    if "\x00" in key:
        raise ConfigurationError("unique_key must not contain a NUL character")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"unique_key is {size} bytes long, the limit is {MAX_KEY_BYTES}: use a shorter key "
            "(a digest of a long one, e.g. hashlib.sha256(...).hexdigest())"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            "unique_key must be valid text (it holds a lone surrogate)"
        ) from None
    return key


def check_period(unique_for: Any) -> float | None:
    """`unique_for=` in seconds: a positive number or timedelta, or None."""
    if unique_for is None:
        return None
    seconds = unique_for.total_seconds() if isinstance(unique_for, timedelta) else unique_for
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"unique_for takes seconds or a timedelta, got {unique_for!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"unique_for must be a positive number of seconds, got {seconds}")
    if seconds > MAX_PERIOD:
        raise ConfigurationError(
            f"unique_for is at most {MAX_PERIOD:.0f} seconds (100 years), got {seconds}"
        )
    return float(seconds)


def check_states(unique_states: Any) -> bool:
    """`unique_states=`: the states in which a job holds its key, ("queued", "running") (the
    default) or ("queued",), in any order; True for queued only."""
    if isinstance(unique_states, str) or not isinstance(unique_states, (Sequence, frozenset, set)):
        raise ConfigurationError(
            'unique_states takes a tuple of states: ("queued", "running") (the default) or '
            f'("queued",), got {unique_states!r}'
        )
    if not all(isinstance(state, str) for state in unique_states):
        raise ConfigurationError(f"unique_states names states by string, got {unique_states!r}")
    states = frozenset(unique_states)
    if states in STATES:
        return states == STATES[1]
    if states & FINISHED_STATES:
        raise ConfigurationError(
            f"unique_states={tuple(unique_states)!r}: a job that has ended holds no key; to keep "
            "the key for a while after the enqueue, whatever became of the job, pass "
            "unique_for=seconds"
        )
    if states == {"running"}:
        raise ConfigurationError(
            'unique_states=("running",) is not supported: for at most one running job per key, '
            "declare the task with key_concurrency_limit=1 and enqueue with concurrency_key=... "
            '(see "Limits across the fleet" in docs/workflows.md)'
        )
    raise ConfigurationError(
        'unique_states takes ("queued", "running") (the default: a queued or running job holds '
        'the key) or ("queued",) (only a queued job does: one job waits per key, while another '
        f"may run), got {unique_states!r}"
    )


def check_on_conflict(on_conflict: Any, period: float | None) -> bool:
    """`on_conflict=`: "keep" (return the job holding the key) or "replace" (update it while
    it is queued); True for "replace"."""
    if on_conflict not in ON_CONFLICT:
        raise ConfigurationError(f'on_conflict must be "keep" or "replace", got {on_conflict!r}')
    if on_conflict == "replace" and period is not None:
        raise ConfigurationError(
            'on_conflict="replace" cannot be combined with unique_for: a period outlives the '
            "job it names, which may have run already; use one or the other"
        )
    return bool(on_conflict == "replace")


class KeyBuilder:
    """What `@app.task(unique=...)` declared: how to make a job's key from its arguments.

    - `unique=True`: the task's name and every argument (bound to the function's parameters,
      defaults filled in, so `f(1, b=2)` and `f(a=1, b=2)` are one key);
    - `unique=("customer_id", ...)`: the task's name and the named arguments only;
    - `unique=callable`: called with the job's arguments, returns the key itself (a string).
    """

    def __init__(self, task_name: str, fn: Callable[..., Any], unique: Any) -> None:
        self.task_name = task_name
        self.names: tuple[str, ...] | None = None
        self.function: Callable[..., Any] | None = None
        if callable(unique) and not isinstance(unique, bool):
            self.function = unique
            return
        try:
            self.signature: inspect.Signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"task {task_name} cannot build a unique key from its arguments: its signature "
                f"cannot be read ({exc}); pass unique=a function returning the key"
            ) from None
        if unique is True:
            return
        if isinstance(unique, str) or not isinstance(unique, Sequence) or not unique:
            raise ConfigurationError(
                f"unique= takes True, a tuple of argument names or a function returning the "
                f"key, got {unique!r}"
            )
        params = self.signature.parameters
        var_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for name in unique:
            if not isinstance(name, str):
                raise ConfigurationError(f"unique= names arguments by string, got {name!r}")
            param = params.get(name)
            if param is None and not var_keyword:
                raise ConfigurationError(
                    f"task {task_name} has no argument {name!r} to build its unique key from "
                    f"(its arguments: {', '.join(params) or 'none'})"
                )
            if param is not None and param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigurationError(
                    f"unique= names single arguments, and {name!r} collects several "
                    "(*args or **kwargs): name the arguments themselves or pass a function"
                )
        self.names = tuple(unique)

    def key(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The key of a job with these arguments; ConfigurationError when they do not fit."""
        if self.function is not None:
            key = self.function(*args, **kwargs)
            if not isinstance(key, str):
                raise TypeError(
                    f"the unique= function of task {self.task_name} must return a string key, "
                    f"got {type(key).__name__}: {key!r:.80}"
                )
            return check_key(key)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(
                f"cannot build the unique key of task {self.task_name}: its arguments do not "
                f"fit the function ({exc})"
            ) from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        if self.names is not None:
            var_keyword = next(
                (p.name for p in self.signature.parameters.values() if p.kind is p.VAR_KEYWORD),
                None,
            )
            extra = values.get(var_keyword, {}) if var_keyword else {}
            picked = {}
            for name in self.names:
                if name in values and name != var_keyword:
                    picked[name] = values[name]
                elif name in extra:
                    picked[name] = extra[name]
                else:
                    raise ConfigurationError(
                        f"cannot build the unique key of task {self.task_name}: argument "
                        f"{name!r} was not given"
                    )
            values = picked
        try:
            text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"cannot build the unique key of task {self.task_name} from its arguments: {exc}"
            ) from None
        key = f"{self.task_name}:{text}"
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES or "\x00" in key:
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
            key = f"{self.task_name}:sha256:{digest}"
        return check_key(key)


@dataclass(frozen=True, slots=True)
class TaskUniqueness:
    """A task's unique options, checked when it is declared."""

    builder: KeyBuilder
    period: float | None
    replace: bool
    queued_only: bool = False


def task_uniqueness(
    task_name: str,
    fn: Callable[..., Any],
    unique: Any,
    unique_for: Any,
    on_conflict: Any,
    unique_states: Any = None,
) -> TaskUniqueness | None:
    """`@app.task(unique=, unique_for=, on_conflict=, unique_states=)`, checked; None for a
    task without."""
    if unique is None or unique is False:
        if unique_for is not None or on_conflict is not None or unique_states is not None:
            raise ConfigurationError(
                f"task {task_name}: unique_for, on_conflict and unique_states need unique= to "
                "say how the key is made (unique=True: from every argument), or pass "
                "unique_key= at enqueue"
            )
        return None
    period = check_period(unique_for)
    replace = check_on_conflict("keep" if on_conflict is None else on_conflict, period)
    queued_only = check_states(unique_states) if unique_states is not None else False
    return TaskUniqueness(KeyBuilder(task_name, fn, unique), period, replace, queued_only)


def options_for(
    declared: TaskUniqueness | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    unique_key: Any,
    unique_for: Any,
    on_conflict: Any,
    unique_states: Any = None,
) -> UniqueOptions | None:
    """The unique options of one enqueue: what the call gave, else what the task declared."""
    if unique_key is None and declared is None:
        if unique_for is not None or on_conflict is not None or unique_states is not None:
            raise ConfigurationError(
                "unique_for, on_conflict and unique_states apply to unique jobs: pass "
                "unique_key= too, or declare the task with @app.task(unique=...)"
            )
        return None
    if unique_key is not None:
        key = check_key(unique_key)
    else:
        assert declared is not None
        key = declared.builder.key(args, kwargs)
    period = check_period(unique_for) if unique_for is not None else None
    if period is None and unique_for is None and declared is not None:
        period = declared.period
    if on_conflict is None:
        replace = declared.replace if declared is not None else False
        if replace and period is not None:
            check_on_conflict("replace", period)
    else:
        replace = check_on_conflict(on_conflict, period)
    return UniqueOptions(key, period, replace, states_for(declared, unique_states))


def states_for(declared: TaskUniqueness | None, unique_states: Any) -> bool:
    """Whether an enqueue's key is held while queued only: what the call gave, else what the
    task declared."""
    if unique_states is not None:
        return check_states(unique_states)
    return declared.queued_only if declared is not None else False


# -- the enqueue ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """A job an enqueue of a key ends with: its row, and whether this enqueue inserted it
    (`created`) or replaced its arguments (`replaced`)."""

    row: dict[str, Any]
    created: bool
    replaced: bool = False


Statement = tuple[str, dict[str, Any]]


def _rows_json(rows: Mapping[str, tuple[str, str]]) -> str:
    """The `rows` parameter: one JSON object per key, sorted by key; args and kwargs are JSON
    text already and go in as they are."""
    return (
        "["
        + ",".join(
            f'{{"unique_key":{json.dumps(key, ensure_ascii=False)},"args":{args},'
            f'"kwargs":{kwargs}}}'
            for key, (args, kwargs) in sorted(rows.items())
        )
        + "]"
    )


def _enqueue_steps(
    template: JobRequest,
    rows: Mapping[str, tuple[str, str]],
    period: float | None,
    replace: bool,
    queued_only: bool,
) -> Generator[Statement, list[dict[str, Any]], dict[str, Written]]:
    """The statements that enqueue one job per key of `rows` (key -> (args JSON, kwargs
    JSON)) with the options of `template` (keys held while queued only with `queued_only`);
    each is sent the rows it returned. Returns the job each key ends with.

    Each statement stands on its own (a transaction around them adds nothing but lock time),
    so they may run in autocommit: the insert decides, and the reads after it find the job
    that made it step aside. If that job ended in between, the key is tried again."""
    options = {
        "queue": template.queue,
        "task_name": template.task_name,
        "priority": template.priority,
        "max_attempts": template.max_attempts,
        "eta": template.eta,
        "countdown": template.countdown,
        "expires_at": template.expires_at,
        "expires_in": template.expires_in,
        "headers": template.headers_json,
        "limited": True if template.limited else None,
        "concurrency_key": template.concurrency_key,
    }
    if period is not None:
        options["period"] = period
        statement = (
            queries.INSERT_QUEUED_UNIQUE_JOBS_FOR_PERIOD
            if queued_only
            else queries.INSERT_UNIQUE_JOBS_FOR_PERIOD
        )
    elif replace:
        statement = (
            queries.INSERT_OR_REPLACE_QUEUED_UNIQUE_JOBS
            if queued_only
            else queries.INSERT_OR_REPLACE_UNIQUE_JOBS
        )
    else:
        statement = queries.INSERT_QUEUED_UNIQUE_JOBS if queued_only else queries.INSERT_UNIQUE_JOBS
    holders = queries.FIND_QUEUED_UNIQUE_HOLDERS if queued_only else queries.FIND_UNIQUE_HOLDERS
    written: dict[str, Written] = {}
    pending = dict(rows)
    for _ in range(MAX_ROUNDS):
        inserted = yield statement, {**options, "rows": _rows_json(pending)}
        for row in inserted:
            key = row["unique_key"]
            created = bool(row["created"])
            written[key] = Written(_job_row(row), created=created, replaced=not created)
            del pending[key]
        if not pending:
            return written
        found = yield holders, {"keys": sorted(pending)}
        for row in found:
            written[row["unique_key"]] = Written(_job_row(row), created=False)
            del pending[row["unique_key"]]
        if pending and period is not None:
            periods = yield queries.HELD_PERIODS, {"keys": sorted(pending)}
            held = {p["unique_key"]: p["job_id"] for p in periods}
            jobs = yield queries.FETCH_JOBS, {"ids": sorted(set(held.values()))}
            by_id = {row["id"]: row for row in jobs}
            gone = {}
            for key, job_id in held.items():
                if job_id in by_id:
                    written[key] = Written(_job_row(by_id[job_id]), created=False)
                    del pending[key]
                else:
                    gone[key] = job_id
            if gone:
                keys = sorted(gone)
                yield queries.RELEASE_PERIODS, {"keys": keys, "job_ids": [gone[k] for k in keys]}
        if not pending:
            return written
        # What made these keys step aside ended before it could be read: try them again.
    raise RuntimeError(
        f"could not enqueue unique jobs for keys {sorted(pending)[:5]} after {MAX_ROUNDS} "
        "rounds: the jobs holding them kept ending in between"
    )


def _job_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("created", "notified")}


# -- drivers: run the steps on a connection --------------------------------------------------


def _run(
    steps: Generator[Statement, list[dict[str, Any]], dict[str, Written]],
    execute: Callable[[str, dict[str, Any]], list[dict[str, Any]]],
) -> dict[str, Written]:
    try:
        statement, params = next(steps)
        while True:
            statement, params = steps.send(execute(statement, params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def enqueue_unique(
    connection: Any,
    template: JobRequest,
    rows: Mapping[str, tuple[str, str]],
    period: float | None,
    replace: bool,
    queued_only: bool,
    *,
    owned: bool = False,
) -> dict[str, Written]:
    """Enqueue keyed jobs on a sync psycopg or SQLAlchemy connection, in its current
    transaction (`owned`: pgqueue's own autocommit connection, where each statement commits
    on its own)."""
    steps = _enqueue_steps(template, rows, period, replace, queued_only)
    kind = PSYCOPG if owned else connection_kind(connection, is_async=False)
    if kind == PSYCOPG:

        def execute(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
            with psycopg.Cursor(connection, row_factory=dict_row) as cur:
                return cur.execute(statement, params).fetchall()

        try:
            return _run(steps, execute)
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=owned) from exc
    import sqlalchemy as sa

    def sa_execute(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = connection.execute(sa.text(queries.as_sqlalchemy(statement)), params)
        return [dict(row) for row in result.mappings()]

    try:
        return _run(steps, sa_execute)
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise


async def aenqueue_unique(
    connection: Any,
    template: JobRequest,
    rows: Mapping[str, tuple[str, str]],
    period: float | None,
    replace: bool,
    queued_only: bool,
    *,
    owned: bool = False,
) -> dict[str, Written]:
    """Async twin of `enqueue_unique`."""
    steps = _enqueue_steps(template, rows, period, replace, queued_only)
    kind = PSYCOPG if owned else connection_kind(connection, is_async=True)
    if kind == PSYCOPG:

        async def execute(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
            async with psycopg.AsyncCursor(connection, row_factory=dict_row) as cur:
                await cur.execute(statement, params)
                return await cur.fetchall()

        try:
            return await _arun(steps, execute)
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=owned) from exc
    import sqlalchemy as sa

    async def sa_execute(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = await connection.execute(sa.text(queries.as_sqlalchemy(statement)), params)
        return [dict(row) for row in result.mappings()]

    try:
        return await _arun(steps, sa_execute)
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise


async def _arun(
    steps: Generator[Statement, list[dict[str, Any]], dict[str, Written]],
    execute: Callable[[str, dict[str, Any]], Any],
) -> dict[str, Written]:
    try:
        statement, params = next(steps)
        while True:
            statement, params = steps.send(await execute(statement, params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
