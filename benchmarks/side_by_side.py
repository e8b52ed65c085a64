"""pgqueue and its peers (PgQueuer, procrastinate, Celery with Redis) through the same
workloads, in one run: drain, pickup latency of an idle worker, bulk enqueue. Prints a table
with ratios and draws benchmarks/results/side_by_side.png. Needs `pip install -e .[bench]`.

Each peer runs with its fastest documented settings (and, for the drain, also with its
defaults); `peers.SETTINGS` says which. pgqueue's latency is measured here the peers' way
(the client's clock, from just before the enqueue to the task's start), so the columns compare.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent


def pgqueue_probe_latency(dsn: str, rate: float, seconds: float) -> dict[str, float]:
    """pgqueue's pickup latency measured as the peers' is: the probe task returns its delay."""
    import bench
    import bench_tasks

    with psycopg.connect(dsn, autocommit=True) as conn:
        bench.reset(conn)
        worker = bench.Worker(dsn, HERE / "results" / "logs" / "side-latency.log")
        bench_tasks.app.set_dsn(dsn)
        try:
            bench_tasks.probe.delay(time.time()).wait(timeout=60)  # warm, not counted
            total = max(2, int(rate * seconds))
            bench.paced(total, 1 / rate, lambda: bench_tasks.probe.delay(time.time()))
            bench.wait_finished(conn, total + 1, timeout=120)
        finally:
            worker.stop()
            bench_tasks.app.close()
        samples = [
            float(row[0])
            for row in conn.execute(
                "SELECT (result #>> '{}')::float8 FROM pgqueue_finished_jobs ORDER BY id OFFSET 1"
            )
        ]
    return {**bench.percentiles(samples), "jobs": float(len(samples))}


def run(
    server: str, dsn: str, n: int, seconds: float, ours: dict[str, float], chart: Path
) -> dict[str, Any]:
    """Measure the peers, print the side-by-side table, draw the chart; returns the figures.
    `ours` holds pgqueue's drain and bulk figures from this same run."""
    try:
        import peers
    except ImportError as exc:
        print(
            f"side by side: skipped, the peers are not installed ({exc}); pip install -e '.[bench]'"
        )
        return {}
    figures: dict[str, dict[str, Any]] = {
        "pgqueue": {
            "drain_per_s": ours["drain_per_s"],
            "bulk_per_s": ours["bulk_per_s"],
            "latency": pgqueue_probe_latency(dsn, 50, seconds),
            "settings": ours["settings"],
        }
    }
    for peer, problem in peers.available(server).items():
        if problem is not None:
            print(f"side by side: {peer} skipped: {problem}")
            continue
        entry: dict[str, Any] = {"settings": peers.SETTINGS[peer]}
        for key, measure in (
            ("drain_per_s", lambda p=peer: peers.drain(p, server, n)),
            ("drain_default_per_s", lambda p=peer: peers.drain(p, server, n, preset="default")),
            ("latency", lambda p=peer: peers.pickup_latency(p, server, 50, seconds)),
            ("bulk_per_s", lambda p=peer: peers.bulk_enqueue(p, server, n)),
        ):
            try:
                entry[key] = measure()
            except Exception as exc:  # one peer's failure must not hide the others
                print(f"side by side: {peer} {key} failed: {exc}")
        figures[peer] = entry
    _print_table(figures)
    _draw(figures, chart)
    return figures


def _print_table(figures: dict[str, dict[str, Any]]) -> None:
    ours = figures["pgqueue"]
    print()
    print(
        f"{'':<14}{'drain jobs/s':>14}{'(default)':>11}{'pgqueue x':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'bulk jobs/s':>13}{'pgqueue x':>11}"
    )
    for name, entry in figures.items():
        drain = entry.get("drain_per_s")
        default = entry.get("drain_default_per_s")
        bulk = entry.get("bulk_per_s")
        latency = entry.get("latency") or {}
        print(
            f"{name:<14}{_n(drain):>14}{_n(default):>11}"
            f"{_ratio(ours['drain_per_s'], default or drain) if name != 'pgqueue' else '':>11}"
            f"{_n(latency.get('p50_ms'), 1):>9}{_n(latency.get('p99_ms'), 1):>9}"
            f"{_n(bulk):>13}"
            f"{_ratio(ours['bulk_per_s'], bulk) if name != 'pgqueue' else '':>11}"
        )
    print("(pgqueue x: pgqueue's figure over the peer's; for the drain, over the peer's default)")
    for name, entry in figures.items():
        print(f"  {name}: {entry['settings']}")


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float, theirs: float | None) -> str:
    return "-" if not theirs else f"{ours / theirs:.1f}x"


def _draw(figures: dict[str, dict[str, Any]], chart: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures)
    colors = ["#2b6cb0" if name == "pgqueue" else "#a0aec0" for name in names]
    fig, (drain_ax, latency_ax, bulk_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    drain_ax.bar(names, [figures[n].get("drain_per_s") or 0 for n in names], color=colors)
    drain_ax.set_title("drain: one worker process, no-op jobs/s")
    p50 = [(figures[n].get("latency") or {}).get("p50_ms", 0) for n in names]
    p99 = [(figures[n].get("latency") or {}).get("p99_ms", 0) for n in names]
    xs = range(len(names))
    latency_ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50", color="#4299e1")
    latency_ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99", color="#2c5282")
    latency_ax.set_xticks(list(xs), names)
    latency_ax.set_title("pickup latency, idle worker, 50 jobs/s (ms)")
    latency_ax.legend()
    bulk_ax.bar(names, [figures[n].get("bulk_per_s") or 0 for n in names], color=colors)
    bulk_ax.set_title("bulk enqueue, jobs/s")
    for ax in (drain_ax, latency_ax, bulk_ax):
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    chart.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(chart, dpi=110)
    print(f"chart written to {chart}")
