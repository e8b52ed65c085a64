"""`pgqueue workflows show ID`: a workflow as a tree, each step with its task, status, job id
and duration."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli._common import Parents, connected, print_json, when
from pgqueue.cli._show import duration, error_line
from pgqueue.cli.jobs import parse_job_id
from pgqueue.job import Job
from pgqueue.workflows import Workflow, get_workflow


def _took(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return (job.finished_at - job.started_at).total_seconds()


def _step_line(job: Job | None, node: dict[str, Any]) -> str:
    if job is None:  # pruned since
        return f"{node.get('task')}  (job {node.get('job_id')} pruned)"
    parts = [job.task_name, job.status.value, f"job {job.id}"]
    took = _took(job)
    if took is not None:
        parts.append(duration(took))
    if job.error and job.status.value in ("failed", "cancelled"):
        parts.append(error_line(job.error, 70))
    return "  ".join(parts)


def tree_lines(flow: Workflow) -> list[str]:
    """The workflow's shape, drawn: one line per chain, group, chord and step."""
    jobs = {job.id: job for job in (*flow.jobs, *flow.link_error_jobs)}
    lines: list[str] = []

    def label(node: dict[str, Any]) -> str:
        if node.get("type") == "task":
            return _step_line(jobs.get(int(node["job_id"])), node)
        if node.get("type") == "chord":
            return "chord (header, then callback)"
        return str(node.get("type"))

    def draw(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + branch + label(node))
        below = prefix + ("" if top else ("    " if last else "│   "))
        children = list(node.get("children", []))
        for i, child in enumerate(children):
            draw(child, below, i == len(children) - 1, False)

    shape = flow.tree.get("shape", {})
    if shape.get("type") == "workflow":  # with link_error callbacks
        for child in shape.get("children", []):
            draw(child, "", True, True)
        lines.append("link_error")
        handlers = shape.get("link_error", [])
        for i, handler in enumerate(handlers):
            draw(handler, "", i == len(handlers) - 1, False)
    else:
        draw(shape, "", True, True)
    return lines


def _tree_json(node: dict[str, Any], jobs: dict[int, Job]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in ("children", "link_error")}
    if node.get("type") == "task":
        job = jobs.get(int(node["job_id"]))
        if job is not None:
            out.update(
                status=job.status.value,
                attempts=job.attempts,
                started_at=job.started_at,
                finished_at=job.finished_at,
                duration=_took(job),
                error=job.error,
            )
    for key in ("children", "link_error"):
        if key in node:
            out[key] = [_tree_json(child, jobs) for child in node[key]]
    return out


def as_json(flow: Workflow) -> dict[str, Any]:
    jobs = {job.id: job for job in (*flow.jobs, *flow.link_error_jobs)}
    return {
        "id": flow.id,
        "status": flow.status.value,
        "created_at": flow.created_at,
        "output_job_ids": flow.output_ids,
        "tree": _tree_json(flow.tree.get("shape", {}), jobs),
    }


def cmd_workflows_show(args: argparse.Namespace) -> int:
    workflow_id = parse_job_id(args.workflow_id, "workflow id")
    app, conn = connected(args)
    conn.close()
    try:
        flow = get_workflow(app, workflow_id)
    finally:
        app.close()
    if args.json:
        print_json(as_json(flow))
        return 0
    steps = len(flow.jobs)
    print(
        f"workflow {flow.id}: {flow.status.value} ({steps} steps, created {when(flow.created_at)})"
    )
    print("\n".join(tree_lines(flow)))
    return 0


def register(sub: Any, parents: Parents) -> None:
    workflows = sub.add_parser(
        "workflows",
        help="show workflows (chains, groups, chords) and their steps",
        description="Workflows made by chain, group, chord or link=/link_error=.",
    )
    wsub = workflows.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = wsub.add_parser(
        "show",
        parents=[parents.common, parents.app, parents.output],
        help="one workflow as a tree: each step's task, status, job id and duration",
        description="A workflow as a tree of its chains, groups and chords; each step with "
        "its task, status, job id, duration and error. Its link_error callbacks are listed "
        "below it.",
    )
    show.add_argument("workflow_id", metavar="ID", help="the workflow's id")
    show.set_defaults(func=cmd_workflows_show)
