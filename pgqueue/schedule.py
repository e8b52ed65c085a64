"""Schedules and their ticks: pure time arithmetic, no database.

A cron schedule is evaluated on the wall clock of its time zone, then each wall time is mapped
to one instant, with explicit rules for daylight saving time:

- A wall time that does not exist (the spring-forward gap, e.g. 02:30 in Europe/Paris on the
  last Sunday of March) fires at the instant it would have had before the change: 02:30 CET is
  01:30 UTC, which is 03:30 CEST. A daily 02:30 job therefore runs once that day, at 03:30; an
  hourly or half-hourly job keeps its real-time rhythm (gap ticks coincide with later ones and
  fire once).
- A wall time that happens twice (the fall-back overlap) fires once, at its first occurrence,
  unless the hour field is `*`: jobs that run every hour (or more often) fire at both, so they
  keep running at real-time intervals through the repeated hour.

Interval schedules (`every=`) tick at whole multiples of the interval since the Unix epoch, in
UTC: every scheduler computes the same fire times, whatever its clock or start time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pgqueue import _json
from pgqueue.config import validate_priority, validate_queue_name
from pgqueue.errors import ConfigurationError

CATCH_UP_POLICIES = ("skip", "latest", "all")
DEFAULT_MAX_CATCH_UP = 100
# With catch_up="skip", a tick counts as on time (not missed) if it is at most this late.
ON_TIME_GRACE = timedelta(seconds=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Wall-clock margin around a window so that DST shifts cannot push a tick out of view.
_DST_MARGIN = timedelta(hours=3)


def parse_every(every: float | timedelta) -> float:
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigurationError(f"every= takes seconds or a timedelta, got {every!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"every= must be a positive interval, got {every!r}")
    return float(seconds)


def parse_timezone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def check_cron(cron: str) -> str:
    # croniter is imported by the apps that declare a cron schedule, not by every worker.
    from croniter import CroniterError, croniter

    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ConfigurationError(
            f"invalid cron expression {cron!r}: expected 5 fields "
            "'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *'"
        )
    if len(cron.split()) != 5:
        raise ConfigurationError(
            f"invalid cron expression {cron!r}: expected exactly 5 fields (no seconds field)"
        )
    try:
        # 2000 is a leap year: a February 29 schedule finds its first tick at once.
        croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise ConfigurationError(
            f"cron expression {cron!r} never fires: no date matches it (such as February 30 "
            "or April 31); check the day-of-month and month fields"
        ) from None
    return cron


@dataclass(frozen=True)
class Schedule:
    """One periodic schedule of one task; validated when made."""

    name: str
    task_name: str
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    catch_up: str = "latest"
    max_catch_up: int = DEFAULT_MAX_CATCH_UP

    def __post_init__(self) -> None:
        where = f"periodic schedule {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(
                f"a periodic schedule needs a non-empty name, got {self.name!r}"
            )
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"{where}: give exactly one of cron= or every=")
        if self.cron is not None:
            check_cron(self.cron)
        else:
            object.__setattr__(self, "every", parse_every(self.every))  # type: ignore[arg-type]
            if self.tz != "UTC":
                raise ConfigurationError(
                    f"{where}: tz= applies to cron schedules only; every= counts real time"
                )
        parse_timezone(self.tz)
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"{where}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                f"got {self.catch_up!r}"
            )
        if not isinstance(self.max_catch_up, int) or self.max_catch_up < 1:
            raise ConfigurationError(f"{where}: max_catch_up must be an int >= 1")
        if self.queue is not None:
            validate_queue_name(self.queue)
        if self.priority is not None:
            validate_priority(self.priority)
        _json.dumps(list(self.args), f"{where} args", "args")
        _json.dumps(dict(self.kwargs), f"{where} kwargs", "kwargs")

    @property
    def spec(self) -> str:
        """Human-readable: the cron expression and zone, or the interval."""
        if self.cron is not None:
            return f"cron '{self.cron}' {self.tz}"
        return f"every {self.every:g}s"

    def definition(self) -> dict[str, Any]:
        """The columns that define the schedule (what sync compares and writes)."""
        return {
            "name": self.name,
            "task_name": self.task_name,
            "cron": self.cron,
            "every_seconds": self.every,
            "tz": self.tz,
            "args": json.dumps(list(self.args)),
            "kwargs": json.dumps(dict(self.kwargs)),
            "queue": self.queue,
            "priority": self.priority,
            "catch_up": self.catch_up,
            "max_catch_up": self.max_catch_up,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        """The schedule a `pgqueue_periodic` row holds; ConfigurationError if it is not a
        valid one (written by an older pgqueue, or by hand)."""
        try:
            return cls._from_row(row)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"periodic schedule {row['name']!r} is invalid: {exc}"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"periodic schedule {row['name']!r} is invalid: {exc} (args must be a JSON "
                "list, kwargs a JSON object)"
            ) from None

    @classmethod
    def _from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            name=row["name"],
            task_name=row["task_name"],
            cron=row["cron"],
            every=row["every_seconds"],
            tz=row["tz"],
            args=tuple(_json.loads(row["args"]) or ()),
            kwargs=dict(_json.loads(row["kwargs"]) or {}),
            queue=row["queue"],
            priority=row["priority"],
            catch_up=row["catch_up"],
            max_catch_up=row["max_catch_up"],
        )

    # -- ticks ----------------------------------------------------------------------------

    def next_tick(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (an aware datetime)."""
        if self.every is not None:
            k = math.floor((after - _EPOCH).total_seconds() / self.every) + 1
            tick = _EPOCH + timedelta(seconds=k * self.every)
            return tick if tick > after else tick + timedelta(seconds=self.every)
        zone = parse_timezone(self.tz)
        window = timedelta(hours=1)
        while True:
            ticks = self._cron_ticks(after, after + window, zone)
            if ticks:
                return ticks[0]
            window *= 2  # sparse schedules (yearly) need a wider look

    def latest_ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Up to `limit` of the most recent fire times in (after, until], oldest first."""
        if until <= after:
            return []
        if self.every is not None:
            last_k = math.floor((until - _EPOCH).total_seconds() / self.every)
            ticks = []
            for k in range(last_k, last_k - limit, -1):
                tick = _EPOCH + timedelta(seconds=k * self.every)
                if tick <= after:
                    break
                ticks.append(tick)
            return ticks[::-1]
        zone = parse_timezone(self.tz)
        ticks = []
        window_end = until
        step = timedelta(hours=1)
        while len(ticks) < limit and window_end > after:
            window_start = max(after, window_end - step)
            found = self._cron_ticks(window_start, window_end, zone)
            ticks = found + ticks
            window_end = window_start
            step *= 2
        return ticks[-limit:]

    def _cron_ticks(self, after: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
        """All instants in (after, until], from wall-clock times mapped by the DST rules."""
        from croniter import croniter

        assert self.cron is not None
        hour_is_wildcard = self.cron.split()[1] == "*"
        start_wall = after.astimezone(zone).replace(tzinfo=None) - _DST_MARGIN
        end_wall = until.astimezone(zone).replace(tzinfo=None) + _DST_MARGIN
        iterator = croniter(self.cron, start_wall)
        instants: set[datetime] = set()
        while True:
            wall: datetime = iterator.get_next(datetime)
            if wall > end_wall:
                break
            for instant in _instants_of(wall, zone, both_folds=hour_is_wildcard):
                if after < instant <= until:
                    instants.add(instant)
        return sorted(instants)


def _instants_of(wall: datetime, zone: ZoneInfo, *, both_folds: bool) -> Sequence[datetime]:
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    utc_first = first.astimezone(timezone.utc)
    exists = utc_first.astimezone(zone).replace(tzinfo=None) == wall
    if exists and first.utcoffset() != second.utcoffset():
        # The overlap: the wall time happens twice.
        if both_folds:
            return (utc_first, second.astimezone(timezone.utc))
        return (utc_first,)
    # Normal time, or the gap (fold=0 keeps the offset from before the change).
    return (utc_first,)
