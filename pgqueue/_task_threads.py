"""The threads sync tasks run on, and the hand-off of their calls and results to and from the
worker's event loop.

A `concurrent.futures.ThreadPoolExecutor` behind `asyncio.wrap_future` costs, per job, a
Future with its own Condition, the executor's lock and semaphore, and a wake-up of the event
loop through its self-pipe when the job ends. Here a call is one item on a `SimpleQueue`, and
the results of all the jobs that end while the loop is busy come back in ONE wake-up: at a
few thousand short jobs a second, the loop wakes once for many of them.

What the worker relies on is kept: at most `size` threads, started as they are needed; a call
whose future is cancelled before a thread takes it never runs; a call that outlives its
future (timeout, cancellation) is reported `finished` when its thread is done with it, so the
worker can count its thread as busy until then; `shutdown()` lets idle threads exit, and
threads are named `<prefix>-N` (`Worker.stuck_threads` finds them by that name).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any


class TaskCall:
    """One call handed to the threads: its loop-side future, and whether its thread is done
    with it (`finished`, with callbacks run on the event loop then)."""

    __slots__ = ("_callbacks", "call", "finished", "future")

    def __init__(self, call: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        self.call: Callable[[], Any] | None = call
        self.future = future
        self.finished = False
        self._callbacks: list[Callable[[TaskCall], object]] = []

    def add_finished_callback(self, callback: Callable[[TaskCall], object]) -> None:
        """Call `callback(self)` on the event loop once the thread is done with this call
        (at once if it is already)."""
        if self.finished:
            callback(self)
        else:
            self._callbacks.append(callback)


class TaskThreads:
    """Up to `size` threads that run sync calls for one event loop."""

    def __init__(self, size: int, name_prefix: str = "pgqueue-task") -> None:
        self.size = size
        self.name_prefix = name_prefix
        self._calls: queue.SimpleQueue[TaskCall | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Ended calls, appended by the threads, taken by the loop; and whether a wake-up of
        # the loop to take them is already on its way.
        self._ended: collections.deque[tuple[TaskCall, bool, Any]] = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Counted on the loop only: calls handed out, and calls whose end the loop has taken.
        self._submitted = 0
        self._settled = 0
        self._shut_down = False
        _live.add(self)

    def submit(self, call: Callable[[], Any]) -> TaskCall:
        """Hand `call` to a thread; its result (or exception) comes to `.future`. Called on
        the event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("TaskThreads serves one event loop; this is another")
        if self._shut_down:
            raise RuntimeError("TaskThreads is shut down")
        handle = TaskCall(call, loop.create_future())
        self._submitted += 1
        self._calls.put(handle)
        # Calls not yet taken back (some may have ended already, which at worst starts a
        # thread early; never more than `size`).
        if self._submitted - self._settled > len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._work, name=f"{self.name_prefix}-{len(self._threads)}"
            )
            self._threads.append(thread)
            thread.start()
        return handle

    def shutdown(self, wait: bool = False, cancel_futures: bool = False) -> None:
        """Let the threads exit once done with what they run; with `cancel_futures`, calls no
        thread has taken yet never run. `wait` joins the threads."""
        self._shut_down = True
        if cancel_futures:
            while True:
                try:
                    handle = self._calls.get_nowait()
                except queue.Empty:
                    break
                if handle is not None:
                    handle.call = None
                    self._ended.append((handle, False, None))
            try:
                on_loop = asyncio.get_running_loop() is self._loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                self._settle()  # their futures are cancelled, their callbacks run
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        calls = self._calls
        while True:
            handle = calls.get()
            if handle is None:
                return
            call = handle.call
            handle.call = None
            if call is None or handle.future.cancelled():
                ended: tuple[TaskCall, bool, Any] = (handle, False, None)
            else:
                try:
                    ended = (handle, True, call())
                except BaseException as exc:  # the loop decides what it means
                    ended = (handle, False, exc)
                del call
            self._ended.append(ended)
            del ended, handle
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                try:
                    if loop is not None:
                        loop.call_soon_threadsafe(self._settle)
                except RuntimeError:  # the loop is closed: nobody waits for the result
                    pass

    def _settle(self) -> None:
        """On the loop: hand every ended call's result to its future."""
        # Cleared first: a call that ends from here on wakes the loop again.
        self._wake_pending = False
        ended = self._ended
        while ended:
            handle, ok, value = ended.popleft()
            self._settled += 1
            handle.finished = True
            future = handle.future
            if not future.done():
                if ok:
                    future.set_result(value)
                elif value is None:
                    future.cancel()
                else:
                    future.set_exception(value)
            callbacks, handle._callbacks = handle._callbacks, []
            for callback in callbacks:
                callback(handle)


# An idle thread waits on its queue, and the interpreter joins every non-daemon thread before
# it exits: without a word at exit, a TaskThreads that was never shut down (its owner failed
# on the way) would keep the process alive. This is what concurrent.futures' threads rely
# on too: a hook that runs before those joins (running calls still finish).
_live: weakref.WeakSet[TaskThreads] = weakref.WeakSet()


def _shut_down_at_exit() -> None:
    for threads in list(_live):
        threads.shutdown()


_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    _register_atexit(_shut_down_at_exit)
