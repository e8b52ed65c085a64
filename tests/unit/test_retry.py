"""RetryPolicy: how long to wait before the next attempt, and whether there is one."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import pgqueue
from pgqueue.retry import DEFAULT_BACKOFF, DEFAULT_BACKOFF_MAX, RetryPolicy


def test_without_jitter_the_wait_doubles_after_each_attempt() -> None:
    policy = RetryPolicy(backoff=0.5, backoff_max=1000, jitter=False)
    assert [policy.next_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_wait_is_capped_by_backoff_max() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=5.0, jitter=False)
    assert [policy.next_delay(n) for n in (1, 2, 3, 4, 5, 30)] == [1, 2, 4, 5, 5, 5]


def test_with_jitter_the_wait_stays_between_zero_and_the_bound() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=6.0, jitter=True)
    rng = random.Random(1234)
    for attempt, bound in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 6.0), (10, 6.0)):
        delays = [policy.next_delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        # Full jitter spreads the waits out instead of always picking the bound.
        assert len(set(delays)) > 100
        assert min(delays) < bound / 4 and max(delays) > bound * 3 / 4


def test_zero_backoff_retries_at_once_even_with_jitter() -> None:
    policy = RetryPolicy(backoff=0.0, jitter=True)
    assert {policy.next_delay(n) for n in range(1, 10)} == {0.0}


def test_a_huge_attempt_number_still_gives_the_capped_wait() -> None:
    policy = RetryPolicy(max_attempts=100_000, backoff=1.0, backoff_max=60.0, jitter=False)
    assert policy.next_delay(5_000) == 60.0


def test_can_retry_until_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.can_retry(1) and policy.can_retry(2)
    assert not policy.can_retry(3)
    assert not RetryPolicy(max_attempts=1).can_retry(1)


def test_only_autoretry_for_exceptions_are_retryable() -> None:
    policy = RetryPolicy(autoretry_for=(ConnectionError, KeyError))
    assert policy.is_retryable(ConnectionError())
    assert policy.is_retryable(ConnectionResetError())  # a subclass counts
    assert policy.is_retryable(KeyError("k"))
    assert not policy.is_retryable(ValueError())
    assert not policy.is_retryable(Exception())


def test_nothing_is_retryable_without_autoretry_for() -> None:
    policy = RetryPolicy()
    assert not policy.is_retryable(Exception("any"))
    assert not policy.is_retryable(ConnectionError())


@pytest.mark.parametrize(
    ("option", "backoff"), [(True, DEFAULT_BACKOFF), (False, 0.0), (2.5, 2.5), (3, 3.0)]
)
def test_from_options_maps_retry_backoff(option: bool | float, backoff: float) -> None:
    policy = RetryPolicy.from_options(retry_backoff=option)
    assert policy.backoff == backoff
    assert isinstance(policy.backoff, float)


def test_from_options_carries_every_option() -> None:
    policy = RetryPolicy.from_options(
        max_attempts=7,
        retry_backoff=0.25,
        retry_backoff_max=9,
        retry_jitter=False,
        autoretry_for=[OSError],
    )
    assert policy == RetryPolicy(
        max_attempts=7, backoff=0.25, backoff_max=9.0, jitter=False, autoretry_for=(OSError,)
    )


def test_defaults() -> None:
    policy = RetryPolicy.from_options()
    assert policy.max_attempts == 3
    assert policy.backoff == DEFAULT_BACKOFF
    assert policy.backoff_max == DEFAULT_BACKOFF_MAX
    assert policy.jitter is True
    assert policy.autoretry_for == ()


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 1.5},
        {"max_attempts": "3"},
        {"max_attempts": True},
        {"retry_backoff": -1},
        {"retry_backoff": "fast"},
        {"retry_backoff": None},
        {"retry_backoff": float("nan")},
        {"retry_backoff_max": -0.1},
        {"retry_backoff_max": float("inf")},
        {"retry_backoff_max": None},
        {"autoretry_for": [ValueError, 42]},
        {"autoretry_for": ["ValueError"]},
    ],
)
def test_invalid_options_raise_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(pgqueue.ConfigurationError):
        RetryPolicy.from_options(**options)


def test_retry_request_validates_its_schedule() -> None:
    assert pgqueue.Retry(countdown=5).countdown == 5
    with pytest.raises(pgqueue.ConfigurationError, match="not both"):
        pgqueue.Retry(countdown=1, eta=datetime.now(timezone.utc))
    for countdown in (-1, float("nan"), float("inf")):
        with pytest.raises(pgqueue.ConfigurationError, match=">= 0"):
            pgqueue.Retry(countdown=countdown)
    with pytest.raises(pgqueue.ConfigurationError, match="timezone-aware"):
        pgqueue.Retry(eta=datetime.now() + timedelta(seconds=1))
