"""Worker start-up, pgqueue against PgQueuer: `make bench-startup`.

    .venv/bin/python benchmarks/startup.py             # 5 alternating pairs
    .venv/bin/python benchmarks/startup.py --quick     # 2 pairs, for a smoke run

Each run queues one job, then starts a worker as a user would, with no option but the app:
`pgqueue worker --app startup_tasks:app`, and PgQueuer's out of the box (`pgqueuer.run` on a
QueueManager on one psycopg connection, batch 10: the "default" preset of peers.py). Start-up
is the time from just before the exec to the moment that first job's task starts, on this
machine's clock, read the same way for both (the task appends its time to a file): the
worker has then imported everything, connected, registered and claimed, whatever each calls
being ready. Beside it, for pgqueue, the time its `ready:` log line gives. Both read their
modules' bytecode from a cache, as installed packages do (see `_command`). The two workers
alternate (AB, BA, ...) on fresh databases of $PGQUEUE_DSN's server (else the embedded one),
after one start each that is not counted; the medians and their ratio are printed, with
every run's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import server_dsn, stop_group  # noqa: E402

from pgqueue import migrate  # noqa: E402

SIDES = ("pgqueue", "pgqueuer")
TIMEOUT = 30.0


@contextmanager
def _database(server: str, side: str) -> Iterator[str]:
    """A fresh database with `side`'s schema, dropped afterwards."""
    name = f"startup_{side}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(server, dbname=name)
    try:
        if side == "pgqueue":
            migrate.upgrade(dsn)
        else:
            asyncio.run(_install_pgqueuer(dsn))
        yield dsn
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _install_pgqueuer(dsn: str) -> None:
    from peer_tasks.pgqueuer_app import connect
    from pgqueuer.queries import Queries

    async with connect(dsn, "psycopg") as driver:
        await Queries(driver).install()  # what `pgq install` runs


def _enqueue(side: str, dsn: str, sent: float) -> None:
    """One probe job carrying `sent`, by each side's own API."""
    if side == "pgqueue":
        from startup_tasks import app, probe

        app.set_dsn(dsn)
        probe.delay(sent)
        app.close()
        return

    async def enqueue() -> None:
        from peer_tasks.pgqueuer_app import connect
        from pgqueuer.queries import Queries

        async with connect(dsn, "psycopg") as driver:
            await Queries(driver).enqueue("probe", repr(sent).encode())

    asyncio.run(enqueue())


def _command(side: str, dsn: str, samples: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PEER_SAMPLES": str(samples)}
    # Both sides read their modules' bytecode from a cache, as an installed package does:
    # compiling pgqueue's sources at every start (PYTHONDONTWRITEBYTECODE, or a checkout
    # whose __pycache__ cannot be written) would time the compiler. The caches go to a
    # directory of the run's own, filled by the first start of each side, which is not counted.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(samples.parent / "pycache")
    if side == "pgqueue":
        env["PGQUEUE_DSN"] = dsn
        return [sys.executable, "-m", "pgqueue", "worker", "--app", "startup_tasks:app"], env
    env.update(PEER_DSN=dsn, PEER_PGQ_DRIVER="psycopg")
    return [sys.executable, "-m", "peer_tasks.pgqueuer_app", "--batch-size", "10"], env


def _read_lines(stream: IO[bytes], lines: list[bytes]) -> None:
    """The worker's output, read as it comes (a full pipe would stop the worker)."""
    lines.extend(stream)


def start_once(side: str, dsn: str, tmp: Path) -> dict[str, float]:
    """Seconds from exec to the first job's start (and, for pgqueue, to its ready line)."""
    samples = tmp / f"{side}.samples"
    samples.write_bytes(b"")
    argv, env = _command(side, dsn, samples)
    sent = time.time()
    _enqueue(side, dsn, sent)
    lines: list[bytes] = []
    started = time.time()
    process = subprocess.Popen(
        argv,
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not samples.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                reader.join(5)
                output = b"".join(lines).decode(errors="replace")
                raise RuntimeError(f"{side} worker ran no job within {TIMEOUT:.0f} s:\n{output}")
            time.sleep(0.01)  # polling for the task's record; the time is the task's own
    finally:
        stop_group(process, 30)
        reader.join(5)
    latency = float(samples.read_bytes().split()[0])
    figures = {"first_job_s": sent + latency - started}
    ready = next((line for line in lines if b" ready: " in line), None)
    if ready is not None:  # the time the line gives: its writing is batched
        figures["ready_line_s"] = _logged_at(ready) - started
    return figures


def _logged_at(line: bytes) -> float:
    """The epoch time a pgqueue log line starts with ("2026-01-31 12:00:00,123", local)."""
    stamp = line[:23].decode()
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


def run(server: str, pairs: int) -> dict[str, Any]:
    """`pairs` alternating starts of each side; each run's figures, medians and the ratio."""
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="startup-")))
        dsns = {side: stack.enter_context(_database(server, side)) for side in SIDES}
        for side in SIDES:  # one start each, not counted: the page cache, bytecode caches
            start_once(side, dsns[side], tmp)
        for pair in range(pairs):
            order = SIDES if pair % 2 == 0 else SIDES[::-1]
            for side in order:
                runs[side].append(start_once(side, dsns[side], tmp))
            shown = ", ".join(f"{side} {runs[side][-1]['first_job_s']:.3f} s" for side in SIDES)
            print(f"pair {pair + 1}: exec to first job: {shown}", flush=True)
    medians = {side: statistics.median(r["first_job_s"] for r in runs[side]) for side in SIDES}
    ready = [r["ready_line_s"] for r in runs["pgqueue"] if "ready_line_s" in r]
    result = {
        "definition": "exec to the first queued job's task start, one job queued beforehand",
        "pgqueue_command": "pgqueue worker --app startup_tasks:app",
        "pgqueuer_command": "pgqueuer.run(create) (QueueManager, one psycopg connection, batch 10)",
        "runs": runs,
        "median_first_job_s": medians,
        "pgqueue_median_ready_line_s": statistics.median(ready) if ready else None,
        "ratio_pgqueue_to_pgqueuer": medians["pgqueue"] / medians["pgqueuer"],
    }
    return result


def report(result: dict[str, Any]) -> None:
    """Every run's figures, then the medians and their ratio."""
    runs = result["runs"]
    for side in SIDES:
        shown = ", ".join(f"{r['first_job_s']:.3f}" for r in runs[side])
        print(f"{side:<9} exec to first job, each run (s): {shown}")
    ready = ", ".join(f"{r['ready_line_s']:.3f}" for r in runs["pgqueue"] if "ready_line_s" in r)
    print(f"pgqueue   exec to its ready line, each run (s): {ready}")
    medians = result["median_first_job_s"]
    print(
        f"median exec to first job: pgqueue {medians['pgqueue']:.3f} s, "
        f"PgQueuer {medians['pgqueuer']:.3f} s, ratio {result['ratio_pgqueue_to_pgqueuer']:.2f} "
        "(pgqueue / PgQueuer: 1 or less meets issue 17's start-up target)"
    )
    if result["pgqueue_median_ready_line_s"] is not None:
        print(f"pgqueue's median exec to ready line: {result['pgqueue_median_ready_line_s']:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (5)")
    parser.add_argument("--quick", action="store_true", help="2 pairs, for a smoke run")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "startup.json")
    args = parser.parse_args()
    result = run(server_dsn(), 2 if args.quick else args.pairs)
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
