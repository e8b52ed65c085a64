# pgqueue's two commands: `make demo` runs the demo, `make test` runs every test.
# Both set up a local virtualenv (.venv) first; only Python 3.10+ is needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench chaos

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "pgqueue needs Python 3.10 or newer; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pgqueue tests examples migrations benchmarks
	$(BIN)/ruff format --check pgqueue tests examples migrations benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-extras .pgqueue .pytest_cache .mypy_cache .ruff_cache

# Throughput, latency, enqueue speed and churn, each against a baseline measured in the same
# run, then the same workloads on PgQueuer, procrastinate and Celery with Redis (the `bench`
# extra, installed here) side by side; writes benchmarks/results/latest.json and
# side_by_side.png. BENCH_ARGS="--quick" for a small smoke run; see docs/benchmarks.md.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# Issue 17's targets 1 and 2: `pgqueue worker` with no flags (sync and async no-op tasks), and
# at --concurrency 10, against PgQueuer out of the box, 20,000 jobs, 3 alternating rounds,
# timed from the worker's exec (docs/benchmarks.md, "Defaults"). DEFAULTS_ARGS="--quick" for a
# 2,000-job smoke round.
.PHONY: bench-defaults
bench-defaults: $(BENCH_STAMP)
	$(BIN)/python benchmarks/defaults.py $(DEFAULTS_ARGS)

# Fleet-wide limits, measured (docs/workflows.md): with 4 workers, a task limited to 50/s never
# starts more than 50 jobs in any one-second window, and an unlimited task of the same queue
# drains at 90% or more of its rate without the limited backlog; 3 runs, each on a fresh
# database. LIMITS_ARGS="--runs 1" for one.
.PHONY: bench-limits
bench-limits: $(STAMP)
	$(BIN)/python benchmarks/limits.py $(LIMITS_ARGS)

# The chaos runs of docs/reliability.md: 3 workers run 10,000 jobs while workers are killed with
# SIGKILL and the database connections cut; it fails unless no job is lost, no transactional job
# takes effect twice and every rescue is under 5 s. Then the same with 200 chords of 20 and 200
# chains of 5 (docs/workflows.md): every workflow ends, every callback runs exactly once. Uses
# PGQUEUE_DSN's server, else the embedded one. A smoke run: CHAOS_ARGS="--jobs 300 --kills 2
# --cuts 1" CHAOS_WORKFLOW_ARGS="--chords 20 --chains 20 --kills 2 --cuts 1".
chaos: $(STAMP)
	$(BIN)/python benchmarks/chaos.py $(CHAOS_ARGS)
	$(BIN)/python benchmarks/chaos.py --workflows $(CHAOS_WORKFLOW_ARGS)

# The bloat benchmark: 10 min at 1,000 jobs/s (throughput flat, hot table bounded), then 5 min
# with a REPEATABLE READ snapshot held (capacity >= 70%). BLOAT_ARGS="--quick" for a smoke run.
# The bench extra brings matplotlib, for its chart.
# What operations cost (docs/benchmarks.md): every command and an exporter scrape on 1,000,000
# finished and 100,000 queued jobs, and a draining worker's throughput while an exporter is
# scraped every second. OPS_ARGS="--quick" for a small smoke run.
.PHONY: bench-ops
bench-ops: $(BENCH_STAMP)
	$(BIN)/python benchmarks/ops_cost.py $(OPS_ARGS)

# One worker process against `--processes N` (default 2), sync no-op and CPU-bound jobs, in
# alternating pairs (docs/benchmarks.md). PROCESSES_ARGS="--pairs 1" for one pair each.
.PHONY: bench-processes
bench-processes: $(STAMP)
	$(BIN)/python benchmarks/processes.py $(PROCESSES_ARGS)

# A fleet (docs/benchmarks.md): 50 worker processes drain 100,000 jobs from a PostgreSQL with
# max_connections = 100, through Debian's pgbouncer; connections, idle CPU, the thundering herd.
# Needs a server in PGQUEUE_DSN. FLEET_ARGS="--workers 8 --jobs 5000" for a small run.
.PHONY: bench-fleet
bench-fleet: $(STAMP)
	$(BIN)/python benchmarks/fleet.py $(FLEET_ARGS)

# Worker start-up (docs/benchmarks.md): `pgqueue worker --app X` against PgQueuer's
# out-of-the-box worker, exec to the first job, in alternating pairs (5); under a minute.
# STARTUP_ARGS="--quick" for 2 pairs. The bench extra brings PgQueuer.
.PHONY: bench-startup
bench-startup: $(BENCH_STAMP)
	$(BIN)/python benchmarks/startup.py $(STARTUP_ARGS)

# The dashboard's speed (docs/benchmarks.md): every page and live update of a real `pgqueue
# dashboard` on 1,000,000 finished and 100,000 queued jobs, and a draining worker's throughput
# with and without ten open overviews, in alternating pairs. DASHBOARD_ARGS="--quick" for a
# small smoke run.
.PHONY: bench-dashboard
bench-dashboard: $(BENCH_STAMP)
	$(BIN)/python benchmarks/dashboard.py $(DASHBOARD_ARGS)

.PHONY: bloat
bloat: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bloat.py $(BLOAT_ARGS)
