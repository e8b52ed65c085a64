"""The command line's batched log output: nothing lost, trouble never delayed."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from pgqueue._logging import ATOMIC_WRITE, BatchingStreamHandler, log_often


class RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"pgqueue.test.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_info_lines_are_written_together_soon_after() -> None:
    stream = RecordingStream()
    handler = BatchingStreamHandler(stream)
    logger = _logger(handler)
    for n in range(100):
        logger.info("job %d succeeded", n)
    assert stream.written.wait(5), "the flusher never wrote the buffered lines"
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
        stream.written.clear()
        stream.written.wait(0.1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 100
    assert lines[0].endswith("INFO    " + logger.name + ": job 0 succeeded")
    assert stream.writes < 100
    handler.close()


def test_a_warning_is_written_at_once_with_what_came_before() -> None:
    stream = RecordingStream()
    handler = BatchingStreamHandler(stream)
    handler._stop_flushing.set()  # only the warning itself may cause the write
    handler._flusher.join()
    logger = _logger(handler)
    logger.info("first")
    logger.warning("trouble")
    assert stream.getvalue().splitlines()[0].endswith("first")
    assert stream.getvalue().splitlines()[1].endswith("trouble")
    handler.close()


def test_close_writes_what_is_buffered() -> None:
    stream = RecordingStream()
    handler = BatchingStreamHandler(stream)
    handler._stop_flushing.set()
    handler._flusher.join()
    logger = _logger(handler)
    logger.info("last words")
    assert stream.getvalue() == ""
    handler.close()
    assert stream.getvalue().endswith("last words\n")
    assert "," in stream.getvalue().split(" ")[1]  # time with milliseconds


def _file_like_stdio(path: Path) -> IO[str]:
    """A stream on a descriptor it does not own, as sys.stdout and sys.stderr are."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    return open(fd, "w", encoding="utf-8", closefd=False)


def test_a_line_with_a_lone_surrogate_is_written_escaped_with_the_lines_around_it(
    tmp_path: Path,
) -> None:
    """A task's text (or a job's error) with a lone surrogate cannot be encoded: the whole
    batch of lines with it was dropped."""
    path = tmp_path / "log"
    stream = _file_like_stdio(path)
    handler = BatchingStreamHandler(stream)
    logger = _logger(handler)
    logger.info("before")
    logger.info("bad \ud83d text")
    logger.warning("after")
    handler.close()
    lines = path.read_text().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["before", "bad \\ud83d text", "after"]


def test_logging_goes_on_after_a_task_closes_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "log"
    stream = _file_like_stdio(path)
    handler = BatchingStreamHandler(stream)
    logger = _logger(handler)
    logger.warning("before")
    stream.close()  # what `sys.stderr.close()` in a task does to the worker's log stream
    logger.warning("after")
    handler.close()
    assert [line.rsplit(": ", 1)[1] for line in path.read_text().splitlines()] == [
        "before",
        "after",
    ]


def test_a_huge_line_is_cut_saying_how_much(tmp_path: Path) -> None:
    stream = RecordingStream()
    handler = BatchingStreamHandler(stream)
    logger = _logger(handler)
    logger.warning("x" * 10_000_000)
    handler.close()
    (line,) = stream.getvalue().splitlines()
    assert len(line) < 200_000
    assert line.endswith("characters cut)")


# -- --log-format json ----------------------------------------------------------------------


def test_json_format_writes_one_object_a_line_with_the_jobs_fields() -> None:
    stream = RecordingStream()
    handler = BatchingStreamHandler(stream, log_format="json")
    logger = _logger(handler)
    logger.info(
        "job %d %s succeeded",
        5,
        "app.add",
        extra={"job_id": 5, "task": "app.add", "attempt": 1, "duration": 0.012, "outcome": "ok"},
    )
    logger.warning('plain line with "quotes"\nand a newline')
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it broke")
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    job, plain, broken = (json.loads(line) for line in lines)
    assert job["message"] == "job 5 app.add succeeded"
    assert (job["level"], job["logger"]) == ("INFO", logger.name)
    assert (job["job_id"], job["task"], job["attempt"]) == (5, "app.add", 1)
    assert (job["duration"], job["outcome"]) == (0.012, "ok")
    assert job["time"].endswith("Z") and "T" in job["time"]
    assert plain["message"] == 'plain line with "quotes"\nand a newline'
    assert "job_id" not in plain
    assert "ValueError: boom" in broken["exception"]


def test_an_unknown_log_format_from_the_environment_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgqueue.cli import main

    monkeypatch.setenv("PGQUEUE_LOG_FORMAT", "xml")
    assert main(["status", "--dsn", "postgresql://postgres@127.0.0.1:1/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "log format 'xml'" in err


def test_an_unknown_log_level_from_the_environment_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgqueue.cli import main

    monkeypatch.setenv("PGQUEUE_LOG_LEVEL", "loud")
    assert main(["status", "--dsn", "postgresql://postgres@127.0.0.1:1/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "log level 'loud'" in err


def test_each_write_holds_whole_lines_within_one_atomic_pipe_write() -> None:
    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return super().write(text)

    stream = Stream()
    handler = BatchingStreamHandler(stream)
    handler._stop_flushing.set()  # one flush, at close, writes every line
    logger = _logger(handler)
    lines = [f"job {n} succeeded {'é' * (n % 50)}" for n in range(500)]
    for line in lines:
        logger.info("%s", line)
    handler.close()

    assert len(writes) > 1
    for text in writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= ATOMIC_WRITE or text.count("\n") == 1
    written = "".join(writes).splitlines()
    assert [line.partition(": ")[2] for line in written] == lines


def test_a_tag_names_the_worker_on_every_line_in_both_formats() -> None:
    text, as_json = RecordingStream(), RecordingStream()
    handlers = [
        BatchingStreamHandler(text, tag="web1-2%s"),
        BatchingStreamHandler(as_json, log_format="json", tag="web1-2%s"),
    ]
    for handler in handlers:
        _logger(handler).info("job %d succeeded", 5)
        handler.close()
    assert text.getvalue().rstrip().endswith("[web1-2%s]: job 5 succeeded")
    assert json.loads(as_json.getvalue())["worker"] == "web1-2%s"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


JOB = {"job_id": 7, "task": "t", "queue": "q", "attempt": 1, "max_attempts": 3}


def _a_job_line(logger: logging.Logger, n: int) -> None:
    log_often(logger, logging.INFO, "job %d took %.3fs", (n, 0.25), {**JOB, "job_id": n})


def test_a_line_logged_often_is_the_record_logging_would_make() -> None:
    """The worker's per-job line copies its attributes from the first such record of its
    thread: each line must still be what `logger.info(..., extra=...)` makes, with its own
    time, message, fields and caller."""
    kept = Kept()
    logger = _logger(kept)
    before = time.time()
    for n in range(3):
        _a_job_line(logger, n)
    logger.info("job %d took %.3fs", 9, 0.25, extra={**JOB, "job_id": 9})
    *often, usual = kept.records
    assert [r.getMessage() for r in often] == [f"job {n} took 0.250s" for n in range(3)]
    assert [r.job_id for r in often] == [0, 1, 2]  # type: ignore[attr-defined]
    assert set(often[2].__dict__) == set(usual.__dict__)
    assert before <= often[0].created <= often[1].created <= often[2].created <= usual.created
    assert often[2].relativeCreated == pytest.approx(usual.relativeCreated, abs=1000)
    for field in ("name", "levelno", "levelname", "thread", "threadName", "process"):
        assert getattr(often[2], field) == getattr(usual, field), field
    for field in ("processName", "module", "filename", "exc_info", "stack_info"):
        assert getattr(often[2], field) == getattr(usual, field), field
    for record in often:
        assert int(record.msecs) == int((record.created - int(record.created)) * 1000)
    # Its caller is where it is logged from, as for any line.
    assert often[2].funcName == "_a_job_line"
    assert often[2].pathname == usual.pathname == __file__
    lines, first = inspect.getsourcelines(_a_job_line)
    assert {r.lineno for r in often} == {first + 1}, lines
    # And handlers format it as any other line, fields included.
    line = json.loads(BatchingStreamHandler(io.StringIO(), "json").format(often[1]))
    assert line["message"] == "job 1 took 0.250s" and line["job_id"] == 1


def test_a_line_logged_often_passes_the_loggers_filters_and_the_apps_record_factory() -> None:
    kept = Kept()
    logger = _logger(kept)
    logger.addFilter(lambda record: record.job_id != 1)  # type: ignore[attr-defined]
    made: list[str] = []
    usual = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = usual(*args, **kwargs)
        made.append(record.getMessage())
        return record

    logging.setLogRecordFactory(factory)
    try:
        for n in range(3):
            _a_job_line(logger, n)
    finally:
        logging.setLogRecordFactory(usual)
    assert made == [f"job {n} took 0.250s" for n in range(3)]
    assert [r.job_id for r in kept.records] == [0, 2]  # type: ignore[attr-defined]
    assert kept.records[0].funcName == "_a_job_line"


def test_a_line_logged_often_names_the_thread_it_is_logged_on() -> None:
    kept = Kept()
    logger = _logger(kept)
    _a_job_line(logger, 0)
    other = threading.Thread(target=_a_job_line, args=(logger, 1), name="pgqueue-other")
    other.start()
    other.join()
    current = threading.current_thread()
    name = current.name
    current.name = "renamed"
    try:
        _a_job_line(logger, 2)
    finally:
        current.name = name
    assert [(r.thread, r.threadName) for r in kept.records] == [
        (current.ident, name),
        (other.ident, "pgqueue-other"),
        (current.ident, "renamed"),
    ]


def test_a_line_logged_often_in_an_asyncio_task_names_the_task_as_logging_does() -> None:
    kept = Kept()
    logger = _logger(kept)
    _a_job_line(logger, 0)  # the first, outside any task

    async def job() -> None:
        _a_job_line(logger, 1)
        logger.info("job %d took %.3fs", 9, 0.25, extra={**JOB, "job_id": 9})

    async def main() -> None:
        await asyncio.create_task(job(), name="pgqueue-job-1")

    asyncio.run(main())
    outside, often, usual = kept.records
    assert getattr(often, "taskName", None) == getattr(usual, "taskName", None)
    assert getattr(outside, "taskName", None) is None
    if hasattr(usual, "taskName"):  # Python 3.12+
        assert often.taskName == "pgqueue-job-1"  # type: ignore[attr-defined]


def test_a_line_logged_often_is_made_the_usual_way_where_the_app_changed_how(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A patched makeRecord (a tracer adding its ids) or a Logger class of the app's own must
    make each record itself: copied from the first, what it adds would be the first's."""
    kept = Kept()
    logger = _logger(kept)
    made = iter(range(100))
    usual = logging.Logger.makeRecord

    def make_record(self: logging.Logger, *args: object, **kwargs: object) -> logging.LogRecord:
        record = usual(self, *args, **kwargs)  # type: ignore[arg-type]
        record.trace_id = next(made)
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", make_record)
    for n in range(3):
        _a_job_line(logger, n)
    monkeypatch.undo()
    assert [r.trace_id for r in kept.records] == [0, 1, 2]  # type: ignore[attr-defined]
    assert {r.funcName for r in kept.records} == {"_a_job_line"}

    class AppLogger(logging.Logger):
        def _log(self, *args: object, **kwargs: object) -> None:
            kwargs["extra"] = {**(kwargs.get("extra") or {}), "app": True}  # type: ignore[dict-item]
            super()._log(*args, **kwargs)  # type: ignore[arg-type]

    app_logger = AppLogger("pgqueue.test.app")
    app_logger.propagate = False
    app_logger.addHandler(kept)
    _a_job_line(app_logger, 3)
    assert kept.records[-1].app is True  # type: ignore[attr-defined]


def test_a_line_logged_often_below_the_loggers_level_is_not_made() -> None:
    kept = Kept()
    logger = _logger(kept)
    logger.setLevel(logging.WARNING)
    _a_job_line(logger, 0)
    assert kept.records == []
