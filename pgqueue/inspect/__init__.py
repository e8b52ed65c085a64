"""The read side of operations: every question an operator asks of the fleet, as functions that
take a connection and return values (dataclasses), never text.

`pgqueue status`, `pgqueue jobs list/show`, `pgqueue workers`, the exporter, `pgqueue doctor` and
the dashboard all read through these modules, so they never disagree and none of them writes
SQL of its own. Every query here is bounded: its cost does not grow with the number of finished
jobs kept.

- `queues`: depth, age, pause state and recent throughput of each queue.
- `jobs`: listing (keyset-paginated) and one job in full.
- `workers`: the live fleet and the workers that left it lately.
- `server`: the health of the database under the queue (xmin horizon, bloat, connections).
"""
