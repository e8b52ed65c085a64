"""An app for the process-pool test of the worker's event loop: its child processes import it
by this path."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pgqueue

app = pgqueue.App()  # the pool passes the worker's DSN to each child


@app.task
def leave_the_pipe_and_linger(folder: str) -> None:
    """Close every inherited descriptor (the pipe to the worker among them), say which
    process this is, then stay alive until the test says go (at most a minute)."""
    os.closerange(3, 65536)
    with open(Path(folder) / "pid", "x") as pid_file:  # the first attempt's process only
        pid_file.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a file with a deadline, in the task under test


@app.task
async def is_process_running(folder: str) -> bool:
    """Runs on the worker's event loop: waits for the lingering process to say which it is,
    then tells whether it still runs."""
    pid_file = Path(folder) / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # polling a file with a deadline, in the task under test
    pid = int(pid_file.read_text())
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
