"""A job whose task the worker does not know waits for one that does, within a bound."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pgqueue.execute import (
    UNKNOWN_TASK_MAX_DELAY,
    UNKNOWN_TASK_MIN_DELAY,
    UNKNOWN_TASK_PATIENCE,
    unknown_task,
)
from pgqueue.outcome import ClaimedJob, Failed, RetryLater

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def _job(age: timedelta | None, attempt: int = 3) -> ClaimedJob:
    created_at = NOW - age if age is not None else None
    return ClaimedJob(7, "default", "deployed.later", [], {}, 0, attempt, 3, created_at=created_at)


def _delay(age: timedelta) -> float:
    outcome = unknown_task(_job(age), NOW)
    assert isinstance(outcome, RetryLater)
    return outcome.delay


def test_a_young_job_goes_back_with_its_attempt_given_back() -> None:
    outcome = unknown_task(_job(timedelta(seconds=1), attempt=3), NOW)  # even on the last one
    assert isinstance(outcome, RetryLater)
    assert outcome.refund_attempt
    assert outcome.delay == UNKNOWN_TASK_MIN_DELAY
    assert outcome.error["type"] == "UnknownTask"
    assert "'deployed.later'" in outcome.error["message"]


def test_the_delay_grows_with_the_jobs_age_up_to_a_cap() -> None:
    ages = [timedelta(seconds=s) for s in (0, 30, 120, 600, 3600, 6 * 3600)]
    delays = [_delay(age) for age in ages]
    assert delays == sorted(delays) and delays[0] < delays[3]
    assert delays[-1] == UNKNOWN_TASK_MAX_DELAY


def test_the_last_wait_ends_at_the_bound() -> None:
    almost = UNKNOWN_TASK_PATIENCE - timedelta(seconds=30)
    assert _delay(almost) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "age", [UNKNOWN_TASK_PATIENCE, UNKNOWN_TASK_PATIENCE + timedelta(days=3)], ids=["at", "past"]
)
def test_a_job_older_than_the_bound_ends_failed(age: timedelta) -> None:
    outcome = unknown_task(_job(age), NOW)
    assert isinstance(outcome, Failed)
    assert outcome.error["type"] == "UnknownTask"
    assert "deploy the code that defines it" in outcome.error["message"]


def test_a_job_without_a_creation_time_ends_failed() -> None:
    assert isinstance(unknown_task(_job(None), NOW), Failed)
