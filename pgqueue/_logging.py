"""The command line's log output: lines written in batches, so that a busy worker's two lines
per job do not cost two system calls per job.

Lines are kept in memory and written together when a flusher thread wakes (every
`FLUSH_INTERVAL` seconds), when a WARNING or worse is logged (trouble is never delayed), when
the buffer holds `MAX_BUFFERED` lines, and at exit. A process killed with SIGKILL loses at most
the last `FLUSH_INTERVAL` of INFO lines; its state is in the database, not in the log. Each
write holds whole lines and at most `ATOMIC_WRITE` bytes, so that processes sharing a pipe
(the workers of `--processes N`) never cut into each other's lines.

What a task does to the process's output must not silence the worker: a line that cannot be
encoded is written with escapes, a huge one is cut, and if a task closes the stream (say
`sys.stderr.close()`), lines go on to its file descriptor.

`--log-format json` (or PGQUEUE_LOG_FORMAT=json) writes one JSON object a line instead: `time`
(ISO 8601, UTC), `level`, `logger`, `message`, and the job's fields on the lines about a job
(`job_id`, `task`, `queue`, `attempt`, `max_attempts`, `duration` in seconds, `outcome`), and
`exception` with the traceback when there is one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import IO

FLUSH_INTERVAL = 0.05
MAX_BUFFERED = 1000
MAX_LINE = 100_000  # characters; the rest of a longer line is cut, saying how much
# A write of at most PIPE_BUF bytes (4096 on Linux) to a pipe is never mixed with another
# process's writes; a longer one can be, when the pipe is full. The workers of
# `pgqueue worker --processes N` share one stdout and stderr: each write holds whole lines and
# stays within this size, so that their lines are never cut into each other.
ATOMIC_WRITE = getattr(select, "PIPE_BUF", 512)
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _Formatter(logging.Formatter):
    """The standard format, with the date and time formatted once per second, not per line;
    with a tag, after the logger's name: `pgqueue.worker[web1-2]: ...`."""

    def __init__(self, tag: str | None = None) -> None:
        tagged = "%(name)s[" + tag.replace("%", "%%") + "]" if tag else "%(name)s"
        super().__init__(FORMAT.replace("%(name)s", tagged))
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


# The attributes a log call may add with `extra=` that the JSON format writes out.
JOB_FIELDS = ("job_id", "task", "queue", "attempt", "max_attempts", "duration", "outcome")
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors; never raises on what a message holds.
    With a tag, each object has it as `worker`."""

    def __init__(self, tag: str | None = None) -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.tag:
            entry["worker"] = self.tag
        for field in JOB_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        # default=str: whatever a task put in a message or field still makes a line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def _formatter(log_format: str, tag: str | None) -> logging.Formatter:
    return JsonFormatter(tag) if log_format == "json" else _Formatter(tag)


def _iso_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _pieces(lines: list[str]) -> Iterator[str]:
    """`lines` as newline-ended texts of whole lines, each at most ATOMIC_WRITE bytes (a
    longer line alone)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = 1 + (len(line) if line.isascii() else len(line.encode("utf-8", "replace")))
        if piece and size + length > ATOMIC_WRITE:
            yield "\n".join(piece) + "\n"
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        yield "\n".join(piece) + "\n"


class BatchingStreamHandler(logging.Handler):
    """A handler that writes formatted lines to `stream` in batches."""

    def __init__(self, stream: IO[str], log_format: str = "text", tag: str | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.log_format = log_format
        self.tag = tag
        self._fd: int | None = None
        with contextlib.suppress(Exception):  # a StringIO has none
            self._fd = stream.fileno()
        self.setFormatter(_formatter(log_format, tag))
        self._lines: list[str] = []
        self._stop_flushing = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="pgqueue-log-flusher", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(line) > MAX_LINE:
            line = f"{line[:MAX_LINE]}... ({len(line) - MAX_LINE} characters cut)"
        self._lines.append(line)
        if record.levelno >= logging.WARNING or len(self._lines) >= MAX_BUFFERED:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        """Write what is buffered (the caller holds the handler's lock)."""
        lines, self._lines = self._lines, []
        for text in _pieces(lines):
            if not self._write_piece(text):
                return

    def _write_piece(self, text: str) -> bool:
        """Write and flush `text`; False if the stream is beyond use."""
        for _ in range(2):
            try:
                self.stream.write(text)
                self.stream.flush()
                return True
            except UnicodeEncodeError:  # a lone surrogate, or a character the stream lacks
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                text = text.encode(encoding, "backslashreplace").decode(encoding)
            except ValueError:  # closed, most likely by a task: write to its descriptor
                if not self._reopen():
                    return False
            except OSError:
                return False  # a broken stream: nowhere left to tell
        return True

    def _reopen(self) -> bool:
        """After a task closed the stream: a stream of our own on the same descriptor."""
        if self._fd is None:
            return False
        try:
            os.fstat(self._fd)
            self.stream = open(  # noqa: SIM115 -- the handler keeps it
                self._fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False
            )
        except (OSError, ValueError):
            self._fd = None
            return False
        return True

    def _flush_periodically(self) -> None:
        while not self._stop_flushing.wait(FLUSH_INTERVAL):
            if self._lines:
                try:
                    self.flush()
                except Exception:  # this thread must outlive any one bad write
                    continue

    def close(self) -> None:
        self._stop_flushing.set()
        self.flush()
        super().close()


def configure(level: int, stream: IO[str], log_format: str = "text") -> None:
    """Send every log record at `level` or above to `stream`, in batches, as text lines or
    (`log_format="json"`) JSON objects."""
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(BatchingStreamHandler(stream, log_format))


def tag_lines(tag: str) -> None:
    """Mark every line pgqueue's handlers write with `tag`: for the workers of
    `pgqueue worker --processes N`, whose lines go to one stream, their worker's name."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingStreamHandler):
            handler.tag = tag
            handler.setFormatter(_formatter(handler.log_format, tag))


def revive_closed_handlers() -> None:
    """Put fresh handlers in place of pgqueue's own that a host framework's logging setup
    closed while they stayed attached (`django.setup()` closes every existing handler): what
    they would have written is not silently buffered for ever."""
    root = logging.getLogger()
    for index, handler in enumerate(list(root.handlers)):
        if isinstance(handler, BatchingStreamHandler) and handler._stop_flushing.is_set():
            fresh = BatchingStreamHandler(handler.stream, handler.log_format, handler.tag)
            fresh.setLevel(handler.level)
            root.handlers[index] = fresh
