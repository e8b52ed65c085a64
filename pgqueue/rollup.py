"""The shape of `pgqueue_stats`: its bucket width, the histogram bounds of pickup wait and
attempt duration, and percentiles read back from those histograms.

Workers add up their outcomes per bucket, queue and outcome, and write the sums a few times a
minute; every reader (`pgqueue status`, the exporter, the dashboard) estimates percentiles from
the same bounds, the way Prometheus' `histogram_quantile` does. A leaf module: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Seconds covered by one row of pgqueue_stats.
BUCKET_SECONDS = 10
# Upper bounds (seconds, inclusive) of the histogram buckets; one more bucket holds the rest.
# Shared by pickup wait and attempt duration, and by the worker's Prometheus histograms.
BOUNDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
# What a row's `outcome` may be: the job ended so, or (retried) its attempt failed and it was
# put back for a later attempt.
OUTCOMES = ("succeeded", "failed", "retried", "cancelled")


def bucket_index(seconds: float) -> int:
    """Which histogram bucket a value falls in (len(BOUNDS) for values above the last bound)."""
    return bisect.bisect_left(BOUNDS, seconds)


def empty_histogram() -> list[int]:
    return [0] * (len(BOUNDS) + 1)


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """Estimate the q-quantile (0 < q < 1) of a histogram over BOUNDS, interpolating linearly
    within the bucket it falls in; None when the histogram is empty. A quantile in the last,
    unbounded bucket is reported as the last bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[index - 1] if index else 0.0
            upper = BOUNDS[index]
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return BOUNDS[-1]
