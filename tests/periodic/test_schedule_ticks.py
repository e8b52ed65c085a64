"""Tick arithmetic, without a database: cron in time zones across DST, and epoch intervals."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from pgqueue import ConfigurationError
from pgqueue.schedule import Schedule

UTC = timezone.utc


def _ticks(schedule: Schedule, start: datetime, hours: int) -> list[datetime]:
    return schedule.latest_ticks(start, start + timedelta(hours=hours), limit=10_000)


@pytest.mark.parametrize(
    ("tz", "spring_day", "expected_utc"),
    [
        # 02:30 does not exist that day: it fires once, at 03:30 local summer time.
        ("Europe/Paris", (2026, 3, 29), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        ("America/New_York", (2026, 3, 8), datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
    ],
)
def test_daily_job_in_the_spring_forward_gap_fires_once_after_the_gap(
    tz: str, spring_day: tuple[int, int, int], expected_utc: datetime
) -> None:
    schedule = Schedule("daily", "t", cron="30 2 * * *", tz=tz)
    start = datetime(*spring_day, tzinfo=UTC) - timedelta(hours=6)
    assert _ticks(schedule, start, 24) == [expected_utc]


@pytest.mark.parametrize(
    ("tz", "fall_day", "expected_utc"),
    [
        # 02:30 happens twice in Paris: a daily job fires at the first one only.
        ("Europe/Paris", (2026, 10, 25), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # In New York the repeated hour is 01:00-02:00; 02:30 happens once.
        ("America/New_York", (2026, 11, 1), datetime(2026, 11, 1, 7, 30, tzinfo=UTC)),
    ],
)
def test_daily_job_in_the_fall_back_overlap_fires_once(
    tz: str, fall_day: tuple[int, int, int], expected_utc: datetime
) -> None:
    schedule = Schedule("daily", "t", cron="30 2 * * *", tz=tz)
    start = datetime(*fall_day, tzinfo=UTC) - timedelta(hours=6)
    assert _ticks(schedule, start, 24) == [expected_utc]


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York"])
@pytest.mark.parametrize("day", ["spring", "fall"])
def test_hourly_job_keeps_real_time_rhythm_through_dst(tz: str, day: str) -> None:
    dates = {
        ("Europe/Paris", "spring"): (2026, 3, 29),
        ("Europe/Paris", "fall"): (2026, 10, 25),
        ("America/New_York", "spring"): (2026, 3, 8),
        ("America/New_York", "fall"): (2026, 11, 1),
    }
    start = datetime(*dates[(tz, day)], tzinfo=UTC) - timedelta(minutes=30)
    ticks = _ticks(Schedule("hourly", "t", cron="0 * * * *", tz=tz), start, 24)
    assert len(ticks) == 24
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))


def test_half_hourly_job_has_no_duplicate_or_missing_tick_through_dst() -> None:
    schedule = Schedule("half", "t", cron="*/30 * * * *", tz="Europe/Paris")
    for day in ((2026, 3, 29), (2026, 10, 25)):
        start = datetime(*day, tzinfo=UTC) - timedelta(hours=3) + timedelta(minutes=1)
        ticks = _ticks(schedule, start, 12)
        assert len(ticks) == 24
        assert len(set(ticks)) == 24


def test_interval_ticks_are_epoch_aligned_and_agree_across_start_times() -> None:
    schedule = Schedule("every", "t", every=90)
    a = schedule.next_tick(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    b = schedule.next_tick(datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC))
    assert a == b == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)


def test_latest_ticks_returns_the_most_recent_oldest_first() -> None:
    schedule = Schedule("m", "t", cron="* * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = schedule.latest_ticks(start, start + timedelta(hours=5), limit=3)
    assert ticks == [start + timedelta(hours=5, minutes=m) for m in (-2, -1, 0)]


def test_next_tick_of_a_yearly_schedule() -> None:
    schedule = Schedule("y", "t", cron="0 0 1 1 *")
    assert schedule.next_tick(datetime(2026, 3, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "* * * *"}, "invalid cron expression"),
        ({"cron": "* * * * * *"}, "exactly 5 fields"),
        ({"cron": "0 0 31 2 *"}, "never fires: no date matches"),
        ({"cron": "0 0 30 2 *"}, "never fires: no date matches"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "never fires: no date matches"),
        ({"every": 0}, "positive interval"),
        ({"every": -5}, "positive interval"),
        ({"every": timedelta(0)}, "positive interval"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({}, "exactly one of cron= or every="),
        ({"cron": "* * * * *", "every": 5}, "exactly one of cron= or every="),
        ({"every": 5, "tz": "Europe/Paris"}, "tz= applies to cron schedules only"),
        ({"cron": "* * * * *", "catch_up": "never"}, "catch_up must be one of"),
        ({"cron": "* * * * *", "args": (object(),)}, "cannot be stored as JSON"),
    ],
)
def test_bad_declarations_are_refused_with_the_reason(
    options: dict[str, object], message: str
) -> None:
    import pgqueue

    app = pgqueue.App("dbname=unused")
    with pytest.raises((ConfigurationError, TypeError), match=message):

        @app.periodic(**options)  # type: ignore[arg-type]
        def job() -> None: ...

    assert app.tasks == {} and app.schedules == {}


def test_a_leap_day_schedule_is_accepted_and_fires_every_four_years() -> None:
    schedule = Schedule("leap", "t", cron="0 0 29 2 *")
    assert schedule.next_tick(datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_several_schedules_for_one_task_stack() -> None:
    import pgqueue

    app = pgqueue.App("dbname=unused")

    @app.periodic(every=60)
    @app.periodic(cron="0 3 * * *", tz="Europe/Paris", kwargs={"full": True})
    @app.task(queue="reports")
    def report(full: bool = False) -> None: ...

    assert len(app.schedules) == 2
    assert {s.task_name for s in app.schedules.values()} == {report.name}
