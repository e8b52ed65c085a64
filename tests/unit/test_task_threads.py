"""The threads sync tasks run on: results come back to the loop, calls cancelled before a
thread takes them never run, a call that outlives its future is reported when its thread is
done with it, and no more than `size` threads ever start."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pgqueue._task_threads import TaskCall, TaskThreads


def test_results_and_exceptions_come_back_to_their_futures() -> None:
    async def main() -> None:
        threads = TaskThreads(4)
        try:
            handles = [threads.submit(lambda i=i: i * 2) for i in range(200)]

            def fail() -> None:
                raise ValueError("from the thread")

            failing = threads.submit(fail)
            assert await asyncio.gather(*(h.future for h in handles)) == [i * 2 for i in range(200)]
            with pytest.raises(ValueError, match="from the thread"):
                await failing.future
            assert all(h.finished for h in handles)
        finally:
            threads.shutdown(wait=True)

    asyncio.run(main())


def test_no_more_threads_than_size_and_named_for_the_worker() -> None:
    seen: set[str] = set()
    gate = threading.Event()

    def record() -> None:
        seen.add(threading.current_thread().name)
        gate.wait(5)

    async def main() -> None:
        threads = TaskThreads(3, name_prefix="pgqueue-task")
        try:
            handles = [threads.submit(record) for _ in range(20)]
            deadline = time.monotonic() + 5
            while len(seen) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # polling until three calls run at once
            gate.set()
            await asyncio.gather(*(h.future for h in handles))
        finally:
            threads.shutdown(wait=True)

    asyncio.run(main())
    assert len(seen) == 3
    assert all(name.startswith("pgqueue-task-") for name in seen)


def test_a_call_cancelled_before_a_thread_takes_it_never_runs() -> None:
    ran: list[str] = []
    gate = threading.Event()

    async def main() -> None:
        threads = TaskThreads(1)
        try:
            busy = threads.submit(lambda: gate.wait(5))
            waiting = threads.submit(lambda: ran.append("waiting"))
            finished: list[TaskCall] = []
            waiting.add_finished_callback(finished.append)
            waiting.future.cancel()
            gate.set()
            await busy.future
            deadline = time.monotonic() + 5
            while not finished and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # polling until the thread has passed it by
            assert finished == [waiting]
        finally:
            threads.shutdown(wait=True)

    asyncio.run(main())
    assert ran == []


def test_a_call_that_outlives_its_future_is_reported_when_its_thread_ends() -> None:
    gate = threading.Event()

    async def main() -> None:
        threads = TaskThreads(2)
        try:
            slow = threads.submit(lambda: gate.wait(5))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(slow.future, 0.05)
            assert not slow.finished
            overrunning = {slow}
            slow.add_finished_callback(overrunning.discard)
            gate.set()
            deadline = time.monotonic() + 5
            while overrunning and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # polling until the thread is done with it
            assert not overrunning
        finally:
            threads.shutdown(wait=True)

    asyncio.run(main())


def test_shutdown_with_cancel_futures_drops_calls_not_started() -> None:
    ran: list[int] = []
    gate = threading.Event()

    async def main() -> None:
        threads = TaskThreads(1)
        threads.submit(lambda: gate.wait(5))
        for i in range(5):
            threads.submit(lambda i=i: ran.append(i))
        threads.shutdown(cancel_futures=True)
        gate.set()
        threads.shutdown(wait=True)

    asyncio.run(main())
    assert ran == []


def test_a_result_after_the_loop_closed_is_dropped_quietly() -> None:
    gate = threading.Event()
    threads = TaskThreads(1)

    async def main() -> None:
        threads.submit(lambda: gate.wait(5))

    asyncio.run(main())
    gate.set()
    threads.shutdown(wait=True)  # the thread ended without raising


def test_a_process_whose_threads_were_never_shut_down_still_exits() -> None:
    import subprocess
    import sys

    code = (
        "import asyncio\n"
        "from pgqueue._task_threads import TaskThreads\n"
        "threads = TaskThreads(2)\n"
        "async def main():\n"
        "    await threads.submit(lambda: 1).future\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=30, check=False)
    assert done.returncode == 0
