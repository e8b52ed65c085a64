"""The command line's batched log output: nothing lost, trouble never delayed."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from pgqueue._logging import ATOMIC_WRITE, BatchingStreamHandler


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
