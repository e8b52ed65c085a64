"""RetryPolicy: given a failed attempt, when to try again, or whether to give up.

Exponential backoff with full jitter: attempt n waits a random time in
[0, min(backoff_max, backoff * 2**(n-1))] (without jitter, exactly that bound). Only the
exceptions a task lists in `autoretry_for`, and `pgqueue.Retry`, are retried.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pgqueue.errors import ConfigurationError

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF = 1.0
DEFAULT_BACKOFF_MAX = 600.0
# 2.0 ** n raises OverflowError past n = 1023; 2**64 times any sensible base is past any cap.
_MAX_DOUBLINGS = 64


def _seconds(option: str, value: object) -> float:
    """`value` as a finite, non-negative number of seconds, or ConfigurationError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(f"{option} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How a task is retried; built once from the task's options and validated then."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF
    backoff_max: float = DEFAULT_BACKOFF_MAX
    jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        _seconds("retry_backoff", self.backoff)
        _seconds("retry_backoff_max", self.backoff_max)
        for exc_type in self.autoretry_for:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise ConfigurationError(f"autoretry_for takes exception classes, got {exc_type!r}")

    @classmethod
    def from_options(
        cls,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_backoff: bool | float = True,
        retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_jitter: bool = True,
        autoretry_for: tuple[type[BaseException], ...] | list[type[BaseException]] = (),
    ) -> RetryPolicy:
        """Map the Celery-style task options onto a policy.

        `retry_backoff=True` means a 1 s base, `False` means retry at once, a number is the
        base in seconds.
        """
        if retry_backoff is True:
            backoff = DEFAULT_BACKOFF
        elif retry_backoff is False:
            backoff = 0.0
        else:
            backoff = _seconds("retry_backoff", retry_backoff)
        return cls(
            max_attempts=max_attempts,
            backoff=backoff,
            backoff_max=_seconds("retry_backoff_max", retry_backoff_max),
            jitter=bool(retry_jitter),
            autoretry_for=tuple(autoretry_for),
        )

    def can_retry(self, attempt: int) -> bool:
        """Whether an attempt numbered `attempt` (1-based) may be followed by another."""
        return attempt < self.max_attempts

    def is_retryable(self, exc: BaseException) -> bool:
        return bool(self.autoretry_for) and isinstance(exc, self.autoretry_for)

    def backoff_bound(self, attempt: int) -> float:
        """The longest wait after attempt `attempt` fails: backoff * 2**(attempt-1), capped."""
        doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
        return min(self.backoff_max, self.backoff * 2.0**doublings)

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after `attempt`."""
        bound = self.backoff_bound(attempt)
        if not self.jitter or bound == 0:
            return bound
        return float((rng or random).uniform(0, bound))
