"""Signatures and the canvas: what a workflow is built from, and the plan it compiles to.

A signature is a task with its arguments and options, not yet enqueued: `add.s(2, 3)`.
`chain`, `group` and `chord` compose signatures (and each other); `apply_async()` on any of
them writes the whole workflow at once (see pgqueue.workflows, which owns the writing and the
`Workflow` handle).

>>> pgqueue.chain(fetch.s(url), parse.s(), store.s()).apply_async()
>>> pgqueue.chord([fetch.s(u) for u in urls], merge.s()).apply_async(connection=session)
>>> (fetch.s(url) | parse.s()).delay()

How values flow: a step with one parent (the previous link of a chain, a task given
`link=`) gets its parent's result prepended to its arguments; a step after a group (a chord's
callback) gets the list of the group's results, in the group's order. A signature made with
`.si()` is immutable: it waits for its parents but takes nothing from them. A `link_error`
callback gets `(failed_job_id, error)` prepended, `error` being the failed step's stored error
(a dict: `type`, `message`, `traceback`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgqueue.enqueue import JobRequest, build_request
from pgqueue.errors import ConfigurationError, UnknownTask
from pgqueue.retry import RetryPolicy

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.job import Job
    from pgqueue.tasks import Task
    from pgqueue.workflows import Workflow

# The options a signature takes, in `.set()`, `apply_async()` and `app.signature()`.
OPTIONS = frozenset(
    {"queue", "priority", "countdown", "eta", "expires", "headers", "concurrency_key"}
)


class WorkflowError(ConfigurationError):
    """A workflow that cannot be enqueued as given (empty, a cycle, a callback of the wrong
    kind); nothing was written."""


class Canvas:
    """What `apply_async()` can enqueue as a workflow: a signature, chain, group or chord."""

    def __or__(self, other: Canvas) -> Chain:
        """`a | b`: a chain of both (chains are flattened)."""
        if not isinstance(other, Canvas):
            return NotImplemented
        left = self.tasks if isinstance(self, Chain) else (self,)
        right = other.tasks if isinstance(other, Chain) else (other,)
        return Chain(*left, *right)

    def _app(self) -> App:
        raise NotImplementedError

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        link: Canvas | Sequence[Canvas] | None = None,
        link_error: Canvas | Sequence[Canvas] | None = None,
    ) -> Workflow:
        """Enqueue the whole workflow; returns its `pgqueue.Workflow`.

        `args`/`kwargs` are given to its first step(s): positional ones before the
        signature's own, as a parent's result would be. `link`: signature(s) run after the
        workflow succeeds, given its result. `link_error`: signature(s) run once, when the
        first step fails for good or is cancelled, given `(failed_job_id, error)`. With
        `connection=` (psycopg 3 Connection or SQLAlchemy Connection/Session) every step is
        written in that connection's transaction: the workflow exists if and only if it
        commits. Everything is checked before anything is written.
        """
        from pgqueue.workflows import enqueue_workflow

        node = _with_partial(self, args, kwargs)
        return enqueue_workflow(self._app(), node, connection, link, link_error)

    def delay(self, *args: Any, **kwargs: Any) -> Workflow:
        """`apply_async(args, kwargs)`: enqueue, pgqueue commits."""
        return self.apply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        link: Canvas | Sequence[Canvas] | None = None,
        link_error: Canvas | Sequence[Canvas] | None = None,
    ) -> Workflow:
        """Async twin of `apply_async()`; `connection=` takes a psycopg AsyncConnection or a
        SQLAlchemy AsyncConnection/AsyncSession."""
        from pgqueue.workflows import aenqueue_workflow

        node = _with_partial(self, args, kwargs)
        return await aenqueue_workflow(self._app(), node, connection, link, link_error)

    async def adelay(self, *args: Any, **kwargs: Any) -> Workflow:
        """Async twin of `delay()`."""
        return await self.aapply_async(args, kwargs)


class Signature(Canvas):
    """One task call, not yet enqueued: the task, its arguments and options.

    Made by `task.s(...)`, `task.si(...)` (immutable) or `app.signature(name, ...)`.
    `.set(queue=, priority=, countdown=, eta=, expires=, headers=)` returns a copy with those
    options. `countdown`/`eta` of a step that waits for parents count from its release.
    """

    def __init__(
        self,
        app: App,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        task: Task[Any, Any] | None = None,
        immutable: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(f"signature args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"signature kwargs must be a dict, got {type(kwargs).__name__}")
        self.app = app
        self.task_name = task_name
        self.task = task
        self.args: tuple[Any, ...] = tuple(args)
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.immutable = bool(immutable)
        self.options: dict[str, Any] = _checked_options(dict(options or {}))

    def __repr__(self) -> str:
        call = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.task_name}.{'si' if self.immutable else 's'}({call})"

    def _app(self) -> App:
        return self.app

    def set(self, **options: Any) -> Signature:
        """A copy with these options (queue, priority, countdown, eta, expires, headers)."""
        return Signature(
            self.app,
            self.task_name,
            self.args,
            self.kwargs,
            task=self.task,
            immutable=self.immutable,
            options={**self.options, **options},
        )

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Signature:
        """A copy with `args` before its own positional arguments and `kwargs` merged in."""
        return Signature(
            self.app,
            self.task_name,
            (*args, *self.args),
            {**self.kwargs, **(kwargs or {})},
            task=self.task,
            immutable=self.immutable,
            options=self.options,
        )

    def request(self, waits: bool) -> JobRequest:
        """The job this signature becomes, checked and serialised. A step that `waits` for
        parents gets its countdown/eta at release (see Plan), not here."""
        options = dict(self.options)
        if waits:
            options.pop("countdown", None)
            options.pop("eta", None)
        return build_request(self._task(), self.args, self.kwargs, **options)

    def _task(self) -> Any:
        if self.task is not None:
            return self.task
        return _ExternalTask(self.task_name, self.app.default_queue)


@dataclass(frozen=True)
class _ExternalTask:
    """A task the enqueueing app does not register, only its workers do (`app.signature(...,
    external=True)`): the defaults a registered task would give its jobs."""

    name: str
    queue: str
    priority: int = 0
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    # What the workers declare is theirs: the step is marked limited if the fleet's limits
    # table names the task (see INSERT_WORKFLOW).
    limits: None = None
    uniqueness: None = None


class Chain(Canvas):
    """Steps run one after the other, each given the previous one's result."""

    def __init__(self, *tasks: Canvas) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Canvas) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        self.tasks: tuple[Canvas, ...] = _canvases("chain", tasks)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def _app(self) -> App:
        return _first_app(self)


class Group(Canvas):
    """Steps run in parallel; their results form a list, in the group's order."""

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Canvas) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        self.tasks: tuple[Canvas, ...] = _canvases("group", tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(repr(t) for t in self.tasks)})"

    def _app(self) -> App:
        return _first_app(self)


class Chord(Canvas):
    """A group (the header) and a callback (the body) given the list of its results."""

    def __init__(self, header: Group | Iterable[Canvas], body: Canvas) -> None:
        if isinstance(header, Canvas) and not isinstance(header, Group):
            header = (header,)
        if not isinstance(header, Group):
            if not isinstance(header, Iterable):
                raise TypeError(
                    f"a chord's header is a group or a list of signatures, got {header!r}: "
                    "call .s() on the task"
                )
            header = tuple(header)
            if not header:
                raise WorkflowError(
                    "a chord's header is empty: give it at least one signature (with no "
                    "members there is nothing to wait for: enqueue the callback itself)"
                )
            header = Group(header)
        self.header: Group = header
        if not isinstance(body, Canvas):
            raise TypeError(f"a chord's callback must be a signature, got {body!r}")
        self.body = body

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def _app(self) -> App:
        return _first_app(self)


def chain(*tasks: Canvas | Iterable[Canvas]) -> Chain:
    """`chain(a.s(1), b.s(), c.s())`: a runs, then b with a's result, then c with b's."""
    return Chain(*tasks)  # type: ignore[arg-type]


def group(*tasks: Canvas | Iterable[Canvas]) -> Group:
    """`group(a.s(1), a.s(2))` or `group([...])`: run in parallel."""
    return Group(*tasks)


def chord(header: Group | Iterable[Canvas], body: Canvas) -> Chord:
    """`chord(header, callback)`: run the header's members in parallel, then the callback
    with the list of their results (in the header's order), exactly once."""
    return Chord(header, body)


def _canvases(kind: str, tasks: Iterable[Any]) -> tuple[Canvas, ...]:
    items = tuple(tasks)
    if not items:
        raise WorkflowError(f"a {kind} needs at least one signature, got none")
    for item in items:
        if not isinstance(item, Canvas):
            raise TypeError(
                f"a {kind} holds signatures (task.s(...)), chains, groups or chords, got "
                f"{item!r}: call .s() on the task"
            )
    return items


def _first_app(node: Canvas) -> App:
    if isinstance(node, Signature):
        return node.app
    if isinstance(node, Chord):
        return _first_app(node.header)
    return _first_app(node.tasks[0])  # type: ignore[attr-defined]


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown signature option(s) {', '.join(unknown)}; a signature takes "
            f"{', '.join(sorted(OPTIONS))}"
        )
    return options


def _with_partial(
    node: Canvas, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> Canvas:
    """`node` with `args`/`kwargs` given to its first step(s)."""
    if not args and not kwargs:
        return node
    if isinstance(node, Signature):
        return node.clone(tuple(args or ()), kwargs)
    if isinstance(node, Chain):
        return Chain(_with_partial(node.tasks[0], args, kwargs), *node.tasks[1:])
    if isinstance(node, Group):
        return Group(tuple(_with_partial(t, args, kwargs) for t in node.tasks))
    assert isinstance(node, Chord)
    return Chord(_with_partial(node.header, args, kwargs), node.body)  # type: ignore[arg-type]


# -- the plan: what a workflow compiles to --------------------------------------------------


@dataclass
class Step:
    """One job of a workflow: its request, its role ('step' or 'link_error'), whether it takes
    its parents' value, how many parents it waits for, and its delay once released."""

    signature: Signature
    request: JobRequest
    role: str
    takes_result: bool
    waiting_for: int = 0
    delay: float = 0.0
    eta: datetime | None = None


@dataclass
class Plan:
    """A workflow's steps (parents before children) and edges (parent index, child index,
    kind, position); `tree`: its shape with step indexes, `output`: the steps whose results
    are the workflow's result (`many`: a list of them, else the one value)."""

    app: App
    steps: list[Step] = field(default_factory=list)
    edges: list[tuple[int, int, str, int]] = field(default_factory=list)
    tree: dict[str, Any] = field(default_factory=dict)
    output: list[int] = field(default_factory=list)
    many: bool = False

    def tree_json(self, ids: Sequence[int]) -> str:
        """The tree and output with job ids in place of step indexes, as stored."""
        return json.dumps(
            {
                "shape": _with_ids(self.tree, ids),
                "output": [ids[i] for i in self.output],
                "many": self.many,
            }
        )


# What a compiled node hands to what follows it: its step indexes, and whether their value
# is a list (a group's) or one value.
@dataclass(frozen=True)
class _Out:
    steps: tuple[int, ...]
    many: bool


def compile_workflow(
    app: App,
    node: Canvas,
    link: Canvas | Sequence[Canvas] | None = None,
    link_error: Canvas | Sequence[Canvas] | None = None,
) -> Plan:
    """Check `node` and its callbacks and compile them to a Plan; raises before anything is
    written: an unknown task, arguments that cannot be stored, an empty group or chord, a
    canvas that contains itself (a cycle)."""
    plan = Plan(app)
    out, plan.tree = _compile(plan, node, None, [])
    plan.output, plan.many = list(out.steps), out.many
    if link is not None:
        links = _as_list(link, "link")
        _, tree = _compile(plan, links[0] if len(links) == 1 else Group(links), out, [])
        plan.tree = {"type": "chain", "children": [plan.tree, tree]}
    if link_error is not None:
        steps = range(len(plan.steps))
        handlers = []
        for handler in _as_list(link_error, "link_error"):
            if not isinstance(handler, Signature):
                raise WorkflowError(
                    f"link_error takes signatures (task.s(...)), not {type(handler).__name__}: "
                    "to run a workflow on failure, give a signature of a task that enqueues it"
                )
            index = _add_step(plan, handler, waits=True, role="link_error")
            plan.steps[index].waiting_for = len(steps)
            plan.edges.extend((parent, index, "error", 0) for parent in steps)
            handlers.append(_leaf(plan, index))
        plan.tree = {"type": "workflow", "children": [plan.tree], "link_error": handlers}
    return plan


def _as_list(value: Canvas | Sequence[Canvas], what: str) -> list[Canvas]:
    items = [value] if isinstance(value, Canvas) else list(value)
    if not items:
        raise WorkflowError(f"{what}= was given an empty list: pass signatures or None")
    for item in items:
        if not isinstance(item, Canvas):
            raise TypeError(f"{what}= takes signatures (task.s(...)), got {item!r}")
    return items


def _compile(
    plan: Plan, node: Canvas, incoming: _Out | None, path: list[int]
) -> tuple[_Out, dict[str, Any]]:
    if id(node) in path:
        raise WorkflowError(
            f"a cycle: this {type(node).__name__.lower()} contains itself; a workflow "
            "must be a tree of signatures, chains, groups and chords"
        )
    path = [*path, id(node)]
    if isinstance(node, Signature):
        index = _add_step(plan, node, waits=incoming is not None, role="step")
        if incoming is not None:
            kind = "results" if incoming.many else "result"
            plan.edges.extend(
                (parent, index, kind, position) for position, parent in enumerate(incoming.steps)
            )
            plan.steps[index].waiting_for = len(incoming.steps)
        return _Out((index,), False), _leaf(plan, index)
    if isinstance(node, Chain):
        out, children = incoming, []
        for member in node.tasks:
            out, tree = _compile(plan, member, out, path)
            children.append(tree)
        assert out is not None
        return out, {"type": "chain", "children": children}
    if isinstance(node, Group):
        indexes: list[int] = []
        children = []
        for member in node.tasks:
            out, tree = _compile(plan, member, incoming, path)
            indexes.extend(out.steps)  # a group in a group adds its members' results
            children.append(tree)
        return _Out(tuple(indexes), True), {"type": "group", "children": children}
    if isinstance(node, Chord):
        header, header_tree = _compile(plan, node.header, incoming, path)
        out, body_tree = _compile(plan, node.body, header, path)
        return out, {"type": "chord", "children": [header_tree, body_tree]}
    raise TypeError(f"not a signature, chain, group or chord: {node!r}")


def _add_step(plan: Plan, signature: Signature, *, waits: bool, role: str) -> int:
    if signature.app is not plan.app and signature.task_name not in plan.app.tasks:
        raise UnknownTask(
            f"task {signature.task_name} is not registered on the app this workflow is "
            "enqueued with: register it there, or use app.signature(name, ..., external=True)"
        )
    task = signature.task
    if task is not None and task.uniqueness is not None:
        # A duplicate would be some other job, outside this workflow: its dependents would
        # wait on a job that is not theirs. Refused rather than written without its key.
        raise WorkflowError(
            f"{role} {signature.task_name}: a task with unique jobs cannot be a workflow step; "
            "enqueue it on its own (a step may enqueue it)"
        )
    try:
        request = signature.request(waits)
    except TypeError as exc:  # arguments that cannot be stored: say which step has them
        raise TypeError(f"{role} {signature.task_name}: {exc}") from None
    delay, eta = 0.0, None
    if waits:
        countdown = signature.options.get("countdown")
        if isinstance(countdown, timedelta):
            countdown = countdown.total_seconds()
        # Checked by build_request's rules on the same values.
        check = build_request(
            signature._task(), (), None, countdown=countdown, eta=signature.options.get("eta")
        )
        delay, eta = check.countdown or 0.0, check.eta
    plan.steps.append(
        Step(signature, request, role, takes_result=not signature.immutable, delay=delay, eta=eta)
    )
    return len(plan.steps) - 1


def _leaf(plan: Plan, index: int) -> dict[str, Any]:
    return {"type": "task", "step": index, "task": plan.steps[index].request.task_name}


def _with_ids(tree: Any, ids: Sequence[int]) -> Any:
    if isinstance(tree, dict):
        out = {k: _with_ids(v, ids) for k, v in tree.items() if k != "step"}
        if "step" in tree:
            out["job_id"] = ids[tree["step"]]
        return out
    if isinstance(tree, list):
        return [_with_ids(item, ids) for item in tree]
    return tree


def signature_of(
    app: App,
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    immutable: bool = False,
    external: bool = False,
    **options: Any,
) -> Signature:
    """`app.signature(name, ...)`: a signature by task name. A name the app does not register
    raises UnknownTask, unless `external=True` says that only the workers know the task (its
    queue is then the app's default unless `queue=` says otherwise, and it has the default
    retry policy)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a task name is a non-empty string, got {name!r}")
    task = app.tasks.get(name)
    if task is None and not external:
        raise UnknownTask(
            f"no task named {name} is registered on this app: check the name, or pass "
            "external=True if only the workers import it"
        )
    return Signature(app, name, args, kwargs, task=task, immutable=immutable, options=options)


def job_of(workflow: Workflow) -> Job:
    """The first step's job: what `task.apply_async(link=...)` returns."""
    return workflow.jobs[0]
