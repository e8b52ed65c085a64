"""The per-job cancel flag behaves as a threading.Event for the code that reads it."""

from __future__ import annotations

import threading

from pgqueue.context import CancelFlag, JobContext
from pgqueue.outcome import ClaimedJob


def test_flag_starts_clear_and_stays_set() -> None:
    flag = CancelFlag()
    assert not flag.is_set()
    assert flag.wait(0) is False
    flag.set()
    assert flag.is_set()
    assert flag.wait(0) is True


def test_set_before_anyone_waits_is_seen_by_a_later_wait() -> None:
    flag = CancelFlag()
    flag.set()
    assert flag.wait(10) is True  # returns at once: no Event existed when set() ran


def test_set_from_another_thread_wakes_a_waiter() -> None:
    flag = CancelFlag()
    waiting = threading.Event()
    woke: list[bool] = []

    def waiter() -> None:
        waiting.set()
        woke.append(flag.wait(30))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(10)
    flag.set()
    thread.join(30)
    assert woke == [True]


def test_job_context_reads_the_claimed_job() -> None:
    job = ClaimedJob(7, "mail", "tasks.send", [1], {}, 0, 2, 5)
    context = JobContext(job)
    assert (context.id, context.task_name, context.queue) == (7, "tasks.send", "mail")
    assert (context.attempt, context.max_attempts) == (2, 5)
    assert not context.cancel_requested
    context.cancel_event.set()
    assert context.cancel_requested
    assert repr(context) == (
        "JobContext(id=7, task_name='tasks.send', queue='mail', attempt=2, max_attempts=5)"
    )
