"""The supervisor of `pgqueue worker --processes N`: N worker processes on one machine.

One worker process runs its claim loop, its async tasks and its Python code on one core (one
event loop, one GIL); the supervisor lets a single command use all of a machine's cores. It
starts N children, each a complete `pgqueue worker` with its own claim loop and connections,
and holds no database connection itself.

- Signals: SIGTERM and SIGINT are forwarded to every child, the second one too, so each child
  stops as a worker stops by itself (warm first, at once on the second signal). The
  supervisor exits once every child has: 0 if they all exited 0.
- Restarts: a child that exits while no stop was asked for (a crash, the OOM killer) is
  started again after a delay that doubles while it keeps exiting soon after its start. A
  child that exits within seconds of its start several times in a row is a configuration the
  supervisor cannot fix: it stops the others and fails with one line.
- Orphans: each child reads one end of a pipe whose other end only the supervisor holds. The
  kernel closes it when the supervisor dies, however it dies (even SIGKILL), and the child
  reads end-of-file and stops warm (`watch_supervisor`). This needs no platform-specific call.

The children are new interpreters (`python -m pgqueue worker ...`), not forks: a fork would
copy whatever the supervisor holds (imported app state, locks held by other threads, the
logging setup), while a fresh process is exactly the worker an operator would start by hand.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pgqueue.errors import PgQueueError

logger = logging.getLogger("pgqueue.supervisor")

# The number of the child's end of the supervisor's pipe, in the child's environment.
SUPERVISOR_FD_ENV = "PGQUEUE_SUPERVISOR_FD"
MAX_PROCESSES = 256
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A child that ran at least this long before it exited is restarted after the first delay
# again: its exit is a new incident, not the next one of a series.
STABLE_RUN = 60.0
# A child that exits this soon after its start, this many times in a row, cannot start.
EARLY_EXIT = 10.0
EARLY_EXITS_TO_GIVE_UP = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How a child ends that stopped as asked: 0; or, when the signal came before it had set up its
# handlers (it held no job yet), killed by it, or 130 from the interrupted start.
STOPPED_AS_ASKED = {0, -signal.SIGTERM, -signal.SIGINT, 130}


def describe_exit(code: int) -> str:
    """A Popen return code in words: `exit code 1`, `killed by SIGKILL`."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


@dataclass
class _Child:
    """One of the N places: the process now in it and its record of exits."""

    number: int
    command: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # monotonic; set while waiting to start again
    delay: float = FIRST_RESTART_DELAY
    early_exits: int = 0
    exit_codes: list[int] = field(default_factory=list)  # exits after the stop was asked for


class Supervisor:
    """Runs one worker command per entry of `commands` (argv after `python -m pgqueue`)
    until stopped by signal; `run()` returns the exit code."""

    def __init__(self, commands: Sequence[Sequence[str]]) -> None:
        self.children = [_Child(n, command) for n, command in enumerate(commands, start=1)]
        self.stop_signals = 0
        self.failure: str | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_signals > 0

    def run(self) -> int:
        # The children inherit the read end; the write end stays here, open until the end.
        self._pipe_read, self._pipe_write = os.pipe()
        # Signals are read as bytes from a pipe the interpreter writes each signal's number to,
        # so that the loop handles them one at a time, never in the middle of its own work.
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous_fd = signal.set_wakeup_fd(wake_write)
        watched = (*STOP_SIGNALS, signal.SIGCHLD)
        previous = {signum: signal.signal(signum, _ignore) for signum in watched}
        try:
            pids = [self._start(child) for child in self.children]
            logger.info(
                "supervising %d worker processes: pids %s",
                len(pids),
                ", ".join(map(str, pids)),
            )
            while self._loop_once(wake_read):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            for fd in (wake_read, wake_write, self._pipe_read, self._pipe_write):
                os.close(fd)
        if self.failure is not None:
            raise PgQueueError(self.failure)
        codes = [code for child in self.children for code in child.exit_codes]
        logger.info("all worker processes stopped (%s)", ", ".join(map(describe_exit, codes)))
        return 0 if all(code in STOPPED_AS_ASKED for code in codes) else 1

    def _loop_once(self, wake_read: int) -> bool:
        """Reap, restart what is due, wait for a signal or the next restart; False once done."""
        for child in self.children:
            self._reap(child)
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now:
                pid = self._start(child)
                logger.info("worker process %d started again: pid %d", child.number, pid)
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        if not due and all(c.process is None for c in self.children):
            return False
        timeout = max(0.0, min(due) - now) if due else None
        select.select([wake_read], [], [], timeout)
        for signum in _drain(wake_read):
            if signum in STOP_SIGNALS:
                self._forward(signal.Signals(signum))
        return True

    def _start(self, child: _Child) -> int:
        """Start the child's process; its pid."""
        env = dict(os.environ, **{SUPERVISOR_FD_ENV: str(self._pipe_read)})
        child.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", *child.command],
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(self._pipe_read,),
            # Out of the terminal's process group: a Ctrl-C reaches the supervisor alone,
            # which forwards it once; a child that got it twice would stop at once.
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        return child.process.pid

    def _reap(self, child: _Child) -> None:
        if child.process is None:
            return
        code = child.process.poll()
        if code is None:
            return
        pid = child.process.pid
        child.process = None
        if self.stopping:
            child.exit_codes.append(code)
            log = logger.info if code in STOPPED_AS_ASKED else logger.warning
            log("worker process %d (pid %d) exited: %s", child.number, pid, describe_exit(code))
            return
        ran = time.monotonic() - child.started_at
        child.early_exits = child.early_exits + 1 if ran < EARLY_EXIT else 0
        if child.early_exits >= EARLY_EXITS_TO_GIVE_UP:
            self._give_up(child, code)
            return
        if ran >= STABLE_RUN:
            child.delay = FIRST_RESTART_DELAY
        child.restart_at = time.monotonic() + child.delay
        logger.warning(
            "worker process %d (pid %d) exited after %.1fs: %s; starting it again in %gs",
            child.number,
            pid,
            ran,
            describe_exit(code),
            child.delay,
        )
        child.delay = min(child.delay * 2, MAX_RESTART_DELAY)

    def _give_up(self, child: _Child, code: int) -> None:
        self.failure = (
            f"worker process {child.number} exited within {EARLY_EXIT:g}s of its start "
            f"{child.early_exits} times in a row (last: {describe_exit(code)}); see the "
            "workers' output above"
        )
        logger.error("%s; stopping the other worker processes", self.failure)
        self.stop_signals = 1  # a signal now is the second one the children get
        self._stop_children(signal.SIGTERM)

    def _forward(self, signum: signal.Signals) -> None:
        self.stop_signals += 1
        if self.stop_signals == 1:
            logger.info("%s: stopping the worker processes (warm)", signum.name)
        else:
            logger.warning("%s again: the worker processes stop at once", signum.name)
        self._stop_children(signum)

    def _stop_children(self, signum: signal.Signals) -> None:
        for child in self.children:
            child.restart_at = None  # a stop cancels restarts not yet made
            if child.process is not None:
                child.process.send_signal(signum)


def _ignore(signum: int, frame: object) -> None:
    """A Python-level handler, so that the interpreter writes the signal to the wakeup fd."""


def _drain(fd: int) -> bytes:
    """Every byte waiting in a non-blocking pipe."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def watch_supervisor(fd: int, already_stopping: Callable[[], bool]) -> None:
    """In a child: stop warm (SIGTERM to itself) once the supervisor is gone.

    The supervisor never writes to the pipe, so a read returns only when its last writer, the
    supervisor, has exited. A child already stopping (the supervisor forwarded a signal, then
    died) is left alone: a second SIGTERM would turn its warm stop into an immediate one.
    """

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:  # not the supervisor's pipe (the variable leaked): nothing to watch
            return
        if not already_stopping():
            logger.warning("the supervisor is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="pgqueue-supervisor-watch", daemon=True).start()
