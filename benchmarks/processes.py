"""One worker process against `pgqueue worker --processes N`, sync tasks: `make bench-processes`.

Each round drains the same jobs twice, with one process and with `--processes N` (default
settings otherwise), in alternating order (AB, BA, ...), on a fresh database of the server of
$PGQUEUE_DSN (else the embedded one): time from the first job's start to the last one's
finish, on the database's clock. Two workloads:

- `noop`: sync no-op jobs, where the database's side of each job is most of the work;
- `burn`: sync jobs of pure-Python arithmetic (`--burn` iterations, about 1.5 ms here) that
  hold the GIL, as CPU-heavy tasks do: what one process cannot spread over several cores.

It prints each pair's ratio (N processes against one) and their median, and writes the
figures as JSON (`--output`). Issue 17's target: with 2 processes on 2 cores, 1.6x or more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402
from bench import (  # noqa: E402
    Worker,
    cores_busy,
    drain_seconds,
    fresh_database,
    machine,
    reset,
    server_dsn,
)


def drain(
    dsn: str, task: str, jobs: int, burn: int, processes: int, logs: Path
) -> tuple[float, float | None]:
    """Jobs per second of one drain of `jobs` jobs of `task` by `processes` processes, and
    how many cores it kept busy (its worker processes' and the server's CPU time over its
    wall time; None when the server's processes cannot be read)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        calls: list[tuple[Any, ...]] = [()] * jobs if task == "noop" else [(burn,)] * jobs
        getattr(bench_tasks, task).delay_many(calls)
        extra = ["--processes", str(processes)] if processes > 1 else []
        # Every child ready before the CPU is read: a child's start-up is not a job's cost.
        worker = Worker(
            dsn, logs / f"processes-{task}-{processes}.log", *extra, ready_lines=processes
        )
        cpu: dict[str, float] = {}
        seconds = drain_seconds(conn, worker, jobs, cpu)
    rate = jobs / seconds
    return rate, cores_busy(rate, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="N (2)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per workload (3)")
    parser.add_argument("--noop-jobs", type=int, default=20_000, help="(20,000)")
    parser.add_argument("--burn-jobs", type=int, default=6_000, help="(6,000)")
    parser.add_argument("--burn", type=int, default=25_000, help="iterations per burn job")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "processes.json")
    args = parser.parse_args()
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with fresh_database(server_dsn()) as dsn, psycopg.connect(dsn) as conn:
        described = machine(conn)
        bench_tasks.app.set_dsn(dsn)
        for task, jobs in (("noop", args.noop_jobs), ("burn", args.burn_jobs)):
            ratios, alone, several = [], [], []
            busy: dict[int, list[float]] = {1: [], args.processes: []}
            for pair in range(args.pairs):
                order = (1, args.processes) if pair % 2 == 0 else (args.processes, 1)
                measured = {n: drain(dsn, task, jobs, args.burn, n, logs) for n in order}
                rates = {n: rate for n, (rate, _) in measured.items()}
                for n, (_, cores) in measured.items():
                    if cores:  # None where /proc cannot be read; 0 if no tick was counted
                        busy[n].append(cores)
                alone.append(rates[1])
                several.append(rates[args.processes])
                ratios.append(rates[args.processes] / rates[1])
                print(
                    f"{task} pair {pair + 1}: {rates[1]:,.0f} jobs/s with 1 process, "
                    f"{rates[args.processes]:,.0f} with {args.processes}: {ratios[-1]:.2f}x"
                    + "".join(
                        f"; cores busy {measured[n][1]:.2f} with {n}"
                        for n in (1, args.processes)
                        if measured[n][1] is not None
                    ),
                    flush=True,
                )
            figures[task] = {
                "jobs": jobs,
                "one_process_per_s": alone,
                f"{args.processes}_processes_per_s": several,
                "ratios": ratios,
                "median_ratio": statistics.median(ratios),
            }
            line = f"{task}: median {statistics.median(ratios):.2f}x"
            if busy[1]:
                # One process and its share of the server keep this many cores busy. At the
                # same CPU per job, N processes on a machine of `cores` could go at most
                # cores / that times as fast: an estimate per pair, since a job's CPU varies
                # from one drain to the next (pairs measured a little past it).
                cores = os.cpu_count() or 1
                estimates = [min(args.processes, cores / one) for one in busy[1]]
                figures[task]["cores_busy_one_process"] = busy[1]
                figures[task][f"cores_busy_{args.processes}_processes"] = busy[args.processes]
                figures[task]["most_at_same_cpu_per_job"] = estimates
                line += (
                    f"; one process kept {statistics.median(busy[1]):.2f} of {cores} cores busy "
                    f"(with the server's share): at the same CPU per job, {args.processes} "
                    f"could go at most {statistics.median(estimates):.2f}x as fast (pairs "
                    + ", ".join(f"{e:.2f}" for e in estimates)
                    + ")"
                )
            print(line, flush=True)
        bench_tasks.app.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": described, "figures": figures}, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
