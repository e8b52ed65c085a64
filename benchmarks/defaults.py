"""pgqueue's worker as users start it against PgQueuer's out of the box: `make bench-defaults`.

Issue 17's targets 1 and 2, side by side in one run. Each round drains the same number of
queued no-op jobs (20,000) with ONE worker process, five ways, in an order that rotates from
round to round:

- `default-sync`: `pgqueue worker --app bench_tasks:app`, no other flag, sync no-op task;
- `default-async`: `pgqueue worker --app bench_async_tasks:app`, no other flag, async no-op
  task; an app of async tasks only, since the default concurrency depends on the app's tasks
  (pgqueue/config.py: 100 for such an app, 10 for bench_tasks, which has sync tasks too);
- `pgqueuer`: PgQueuer 1.6 out of the box (peers.py's `default` preset: batch 10, psycopg);
- `c10-sync`, `c10-async`: `pgqueue worker --app bench_tasks:app --concurrency 10`.

`--log-cost` and `--claim-ahead-cost` add both defaults again with `--log-level WARNING`
and with `--claim-ahead 0`: what the per-job INFO line costs and what claiming ahead buys.

Each drain is timed from just before the worker's exec to the last job's finish on the
database's clock (same machine): start-up is included, as users see it. It prints every
round's figures, the medians and the ratios default-sync/pgqueuer (target 2x),
default-async/pgqueuer (3x) and c10-sync/c10-async (0.5), and writes them as JSON.

    .venv/bin/python benchmarks/defaults.py            # 3 rounds of 20,000 jobs
    .venv/bin/python benchmarks/defaults.py --quick    # 1 round of 2,000 jobs (CI smoke)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_async_tasks  # noqa: E402
import bench_tasks  # noqa: E402
import peers  # noqa: E402
from bench import Worker, fresh_database, machine, reset, scalar, server_dsn  # noqa: E402

# name: (app module, task, extra worker flags); None for PgQueuer.
CONFIGURATIONS: dict[str, tuple[str, str, tuple[str, ...]] | None] = {
    "default-sync": ("bench_tasks", "noop", ()),
    "default-async": ("bench_async_tasks", "anoop", ()),
    "pgqueuer": None,
    "c10-sync": ("bench_tasks", "noop", ("--concurrency", "10")),
    "c10-async": ("bench_tasks", "anoop", ("--concurrency", "10")),
}
RATIOS = {  # name: (numerator, denominator, target)
    "default-sync/pgqueuer": ("default-sync", "pgqueuer", 2.0),
    "default-async/pgqueuer": ("default-async", "pgqueuer", 3.0),
    "c10-sync/c10-async": ("c10-sync", "c10-async", 0.5),
}


def pgqueue_drain(
    dsn: str, module: str, task: str, flags: tuple[str, ...], jobs: int, log: Path
) -> float:
    """Jobs/s of one `pgqueue worker --app <module>:app` emptying `jobs` queued jobs of its
    `task`, from its exec to the last finish."""
    tasks = importlib.import_module(module)
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        with psycopg.connect(dsn) as tx:
            getattr(tasks, task).delay_many([()] * jobs, connection=tx)
        quiet = "--log-level" in flags  # no ready line to wait for
        worker = Worker(dsn, log, *flags, scheduler=True, app=f"{module}:app", wait_ready=not quiet)
        try:
            deadline = time.monotonic() + 120 + jobs / 50
            while scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs") < jobs:
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the drain did not end; see {log}")
                time.sleep(0.05)  # polling progress
        finally:
            worker.stop()
        last = scalar(
            conn, "SELECT extract(epoch FROM max(finished_at)) FROM pgqueue_finished_jobs"
        )
        failed = scalar(
            conn, "SELECT count(*) FROM pgqueue_finished_jobs WHERE status <> 'succeeded'"
        )
    if failed:
        raise RuntimeError(f"{failed} jobs did not succeed; see {log}")
    return jobs / (float(last) - worker.started_at)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="jobs per drain (20,000; quick 2,000)")
    parser.add_argument("--rounds", type=int, help="rounds (3; quick 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--only", action="append", help="only these configurations (repeatable)")
    parser.add_argument(
        "--sweep",
        help="also sync and async at these concurrencies, comma-separated (e.g. 20,50,100): "
        "the candidate defaults",
    )
    parser.add_argument(
        "--log-cost",
        action="store_true",
        help="also both defaults with --log-level WARNING: what the per-job INFO lines cost",
    )
    parser.add_argument(
        "--claim-ahead-cost",
        action="store_true",
        help="also both defaults with --claim-ahead 0: what claiming ahead buys",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "defaults.json")
    args = parser.parse_args()
    for n in args.sweep.split(",") if args.sweep else ():
        CONFIGURATIONS[f"sync-c{n}"] = ("bench_tasks", "noop", ("--concurrency", n))
        CONFIGURATIONS[f"async-c{n}"] = ("bench_tasks", "anoop", ("--concurrency", n))
    # Both defaults again with one flag more: (wanted, name suffix, the flag and its value).
    variants = (
        (args.log_cost, "warning", ("--log-level", "WARNING")),
        (args.claim_ahead_cost, "claim-ahead-0", ("--claim-ahead", "0")),
    )
    for wanted, suffix, extra in variants:
        for name in ("default-sync", "default-async") if wanted else ():
            configuration = CONFIGURATIONS[name]
            assert configuration is not None
            module, task, flags = configuration
            CONFIGURATIONS[f"{name}-{suffix}"] = (module, task, (*flags, *extra))
    jobs = args.jobs or (2_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    names = [name for name in CONFIGURATIONS if not args.only or name in args.only]
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if "pgqueuer" in names and importlib.util.find_spec("pgqueuer") is None:
        print("pgqueuer left out: not installed (the `bench` extra)", flush=True)
        names.remove("pgqueuer")
    server = server_dsn()
    figures: dict[str, list[float]] = {name: [] for name in names}
    with fresh_database(server) as dsn, psycopg.connect(dsn) as conn:
        described = machine(conn)
        bench_tasks.app.set_dsn(dsn)
        bench_async_tasks.app.set_dsn(dsn)
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                configuration = CONFIGURATIONS[name]
                if configuration is None:
                    rate = peers.drain("pgqueuer", server, jobs, preset="default", from_start=True)
                else:
                    module, task, flags = configuration
                    log = logs / f"defaults-{name}.log"
                    rate = pgqueue_drain(dsn, module, task, flags, jobs, log)
                figures[name].append(rate)
                print(f"round {round_ + 1}: {name:21} {rate:8,.0f} jobs/s", flush=True)
        bench_tasks.app.close()
        bench_async_tasks.app.close()
    medians = {name: statistics.median(rates) for name, rates in figures.items()}
    ratios: dict[str, Any] = {}
    for label, (top, bottom, target) in RATIOS.items():
        if top in figures and bottom in figures:
            per_round = [a / b for a, b in zip(figures[top], figures[bottom], strict=True)]
            ratios[label] = {"per_round": per_round, "median": statistics.median(per_round)}
            ratios[label]["target"] = target
    print(f"medians ({jobs:,} jobs, {rounds} round(s), from the worker's exec):")
    for name, median in medians.items():
        print(
            f"  {name:21} {median:8,.0f} jobs/s   rounds: "
            + ", ".join(f"{rate:,.0f}" for rate in figures[name])
        )
    for label, ratio in ratios.items():
        rounds_text = ", ".join(f"{r:.2f}" for r in ratio["per_round"])
        target = ratio["target"]
        print(f"  {label:24} {ratio['median']:.2f}x (target {target:g}x; rounds: {rounds_text})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": described,
                "jobs": jobs,
                "figures": figures,
                "medians": medians,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
