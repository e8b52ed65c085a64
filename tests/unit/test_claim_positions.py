"""Where each claim starts: on from its positions, moved back for announced jobs, and from the
start once per interval; and how enqueue notifications are read."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

import pgqueue
from pgqueue.claim import (
    ABOVE_ALL_PRIORITIES,
    BELOW_ALL_PRIORITIES,
    SHARERS,
    WAKE_FANOUT,
    ClaimSignal,
    Enqueued,
    Position,
    claim_params,
    parse_enqueued,
    rewind,
)
from pgqueue.config import WorkerSettings
from pgqueue.worker import FULL_CLAIM_INTERVAL, Worker

POSITION = (0, datetime(2026, 1, 1, tzinfo=timezone.utc), 42)


def _worker() -> Worker:
    return Worker(pgqueue.App(dsn="postgresql://unused"), WorkerSettings(queues=("busy", "idle")))


def test_each_queue_is_read_from_its_start_first_then_from_its_position() -> None:
    worker = _worker()
    assert worker._claim_positions() == ({}, True)
    worker._positions["busy"] = {0: POSITION}  # the claim took jobs from "busy" only
    # "idle" has no position because it never had a job: reading it is not a full read, and
    # must not count as one when full reads are timed.
    assert worker._claim_positions() == ({"busy": [POSITION]}, False)


def test_slow_full_reads_are_spaced_out() -> None:
    worker = _worker()
    worker._claim_positions()
    worker._positions["busy"] = {0: POSITION}
    for queue in worker.queues:  # the last full read was 2 intervals ago...
        worker._full_claim_at[queue] -= 2 * FULL_CLAIM_INTERVAL
    worker._full_claim_seconds = FULL_CLAIM_INTERVAL  # ...and took a whole interval
    assert worker._claim_positions() == ({"busy": [POSITION]}, False)
    worker._full_claim_seconds = 0.001
    assert worker._claim_positions() == ({}, True)


def test_each_priority_is_read_on_from_its_position_and_the_others_from_their_start() -> None:
    at = POSITION[1]
    params = claim_params(["q", "other"], 10, 1, {"q": [(0, at, 7), (5, at, 9), (4, at, 8)]})
    stretches = list(
        zip(
            params["queues"],
            params["after_priority"],
            params["after_id"],
            params["lower_than"],
            params["higher_than"],
            strict=True,
        )
    )
    assert [(q, p, i) for q, p, i, _, _ in stretches if p is not None] == [
        ("q", 5, 9),
        ("q", 4, 8),
        ("q", 0, 7),
    ]
    # In claim order: priority 5 from its position, 4 from its position (nothing lies between),
    # 1 to 3 whole, 0 from its position, everything below 0 whole; a queue without positions
    # whole. Nothing above 5: jobs there are announced, and get a position.
    assert [(q, p, below, above) for q, p, _, below, above in stretches] == [
        ("q", 5, 0, 0),
        ("q", 4, 0, 0),
        ("q", None, 4, 0),
        ("q", 0, 0, 0),
        ("q", None, 0, BELOW_ALL_PRIORITIES),
        ("other", None, ABOVE_ALL_PRIORITIES, BELOW_ALL_PRIORITIES),
    ]


def test_an_announced_job_moves_the_position_of_its_priority_back_never_forward() -> None:
    at = POSITION[1]
    positions = {0: (0, at, 42)}
    rewind(positions, 0, at + timedelta(seconds=1))  # sorts after: nothing to do
    assert positions == {0: (0, at, 42)}
    rewind(positions, 0, at)  # committed late, with the same run_at: read from just before
    assert positions[0] < (0, at, 0)
    earlier = positions[0]
    rewind(positions, 0, at - timedelta(seconds=1))
    assert positions[0] < (0, at - timedelta(seconds=1), 0) and positions[0] < earlier
    rewind(positions, -3, at - timedelta(days=1))  # below the positions: read whole anyway
    assert set(positions) == {0}
    rewind(positions, 7, at + timedelta(days=1))  # above them: gets a position of its own
    assert positions[7] < (7, at + timedelta(days=1), 0)


def test_a_queue_read_whole_needs_no_position() -> None:
    positions: dict[int, Position] = {}
    rewind(positions, 7, POSITION[1])
    assert positions == {}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("default", Enqueued("default")),  # hand-written SQL
        ("a.b:c-d_1@1764754381.5", Enqueued("a.b:c-d_1", 1764754381.5, None, True)),
        ("q@1764754381.123456@-3", Enqueued("q", 1764754381.123456, -3, False)),
        ("q@1764754381.123456@5@later", Enqueued("q", 1764754381.123456, 5, True)),
        ("q@soon", Enqueued("q")),
        ("q@1@x", Enqueued("q")),
    ],
)
def test_enqueue_payloads_are_read(payload: str, expected: Enqueued) -> None:
    assert parse_enqueued(payload) == expected


HOSTILE_PAYLOADS = [
    "default@nan@0",
    "default@-Infinity@0",
    "default@Infinity@0@later",
    "default@1e20@0",
    "default@1e12@5",
    "default@-1e12@0",
    "default@1764754381.5@99999999999",
    "default@inf",
    "default@@",
    "@",
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS)
def test_a_payload_out_of_range_is_only_a_wake_up(payload: str) -> None:
    """A NOTIFY sent by hand, or a run_at of 'infinity', must never reach the claim loop's
    datetime arithmetic (it stopped the worker)."""
    note = parse_enqueued(payload)
    assert (note.run_at, note.priority) == (None, None)

    async def run() -> dict[tuple[str, int], datetime]:
        signal = ClaimSignal(["default"], poll_interval=60)
        signal._on_notify(payload)
        return signal.take_rewinds()

    assert asyncio.run(run()) == {}


def test_the_claimer_is_told_the_earliest_announced_job_of_each_priority_once() -> None:
    async def run() -> tuple[dict[tuple[str, int], datetime], dict[tuple[str, int], datetime]]:
        signal = ClaimSignal(["q"], poll_interval=60)
        for payload in ("q@1000.5@0", "q@1000.25@0", "q@2000@0", "q@1500@3", "elsewhere@1@0"):
            signal._on_notify(payload)
        signal._on_notify("q@1000@0@later")  # due long ago: at once
        return signal.take_rewinds(), signal.take_rewinds()

    first, second = asyncio.run(run())
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert first == {
        ("q", 0): epoch + timedelta(seconds=1000),
        ("q", 3): epoch + timedelta(seconds=1500),
    }
    assert second == {}


def test_a_job_due_later_is_announced_when_its_timer_fires() -> None:
    async def run() -> dict[tuple[str, int], datetime]:
        signal = ClaimSignal(["q"], poll_interval=60)
        due = time.time() + 0.05
        signal._on_notify(f"q@{due!r}@2@later")
        assert signal.take_rewinds() == {}
        await asyncio.wait_for(signal.wait(), 30)  # woken by the timer, not the poll tick
        return signal.take_rewinds()

    assert list(asyncio.run(run())) == [("q", 2)]


def test_claim_positions_move_back_for_announced_jobs() -> None:
    worker = _worker()
    worker._claim_positions()
    worker._positions["busy"] = {0: POSITION}
    late = POSITION[1] - timedelta(seconds=3)
    positions, _ = worker._claim_positions({("busy", 0): late, ("idle", 0): late})
    assert positions["busy"][0] < (0, late, 0)
    assert "idle" not in positions  # read whole: no position to move


def test_a_bulk_enqueue_announces_where_its_jobs_sort() -> None:
    from pgqueue.enqueue import JobRequest
    from pgqueue.enqueue_many import BulkRequest, _payload

    now = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    template = JobRequest("reports.q-1", "t", "[]", "{}", -2, None, None, 3)
    due_now = parse_enqueued(_payload(BulkRequest(template, [("[]", "{}")]), now))
    assert due_now == Enqueued("reports.q-1", now.timestamp(), -2, False)
    template.countdown = 5.0
    later = parse_enqueued(_payload(BulkRequest(template, [("[]", "{}")]), now))
    assert later == Enqueued("reports.q-1", now.timestamp() + 5, -2, True)


def test_a_notification_wakes_only_a_few_workers_of_a_large_fleet() -> None:
    """Every worker of a fleet of 50 reads the same notification and the same few act on it,
    a different few for each enqueue: the thundering herd is bounded by WAKE_FANOUT."""

    async def run() -> tuple[list[int], set[int]]:
        fleet = 50
        signals = [ClaimSignal(["q"], poll_interval=60) for _ in range(fleet)]
        for place, signal in enumerate(signals):
            signal.set_fleet({"q": (place, fleet)})
        woken_counts, chosen = [], set()
        for n in range(200):
            note = parse_enqueued(f"q@{1_700_000_000 + n * 0.000137:.6f}@0")
            woken = [place for place, s in enumerate(signals) if s.wakes_me(note)]
            woken_counts.append(len(woken))
            chosen.update(woken)
        return woken_counts, chosen

    woken_counts, chosen = asyncio.run(run())
    assert set(woken_counts) == {WAKE_FANOUT}
    assert len(chosen) == 50  # every worker gets its share


def test_a_small_fleet_and_an_unknown_fleet_wake_every_worker() -> None:
    async def run() -> tuple[bool, bool, bool]:
        signal = ClaimSignal(["q"], poll_interval=60)
        note = parse_enqueued("q@1700000000.5@0")
        unknown = signal.wakes_me(note)
        signal.set_fleet({"q": (1, WAKE_FANOUT)})
        small = signal.wakes_me(note)
        bare = signal.wakes_me(parse_enqueued("q"))  # nothing to choose by
        return unknown, small, bare

    assert asyncio.run(run()) == (True, True, True)


def test_a_notification_left_to_other_workers_still_moves_the_position_back() -> None:
    async def run() -> tuple[bool, dict[tuple[str, int], datetime]]:
        signal = ClaimSignal(["q"], poll_interval=60)
        note = parse_enqueued("q@1000.5@0")
        fleet = 50
        place = next(p for p in range(fleet) if not _with_place(p, fleet).wakes_me(note))
        signal.set_fleet({"q": (place, fleet)})
        signal._on_notify("q@1000.5@0")
        return signal._event.is_set(), signal.take_rewinds()

    woken, rewinds = asyncio.run(run())
    assert not woken
    assert rewinds == {
        ("q", 0): datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=1000.5)
    }


def _with_place(place: int, fleet: int) -> ClaimSignal:
    signal = ClaimSignal(["q"], poll_interval=60)
    signal.set_fleet({"q": (place, fleet)})
    return signal


def test_a_large_fleet_shares_the_polls_and_passes() -> None:
    """About SHARERS polls and maintenance passes per interval across the fleet, whatever
    its size."""

    async def run() -> tuple[float, list[float]]:
        signal = ClaimSignal(["q"], poll_interval=60)
        small = signal.spread()
        signal.set_fleet({"q": (3, 50)})
        return small, [signal.spread() for _ in range(200)]

    small, spreads = asyncio.run(run())
    assert small == 1.0
    share = 50 / SHARERS
    assert all(share * 0.8 <= spread <= share * 1.2 for spread in spreads)


def test_a_queue_this_worker_serves_alone_keeps_its_poll() -> None:
    async def run() -> float:
        signal = ClaimSignal(["shared", "mine"], poll_interval=60)
        signal.set_fleet({"shared": (3, 50), "mine": (0, 1)})
        return signal.spread()

    assert asyncio.run(run()) == 1.0
