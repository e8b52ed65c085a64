"""What a canvas compiles to: its steps, the edges between them and the value each takes, and
the bad inputs refused before any SQL runs (the app points at no server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import pgqueue
from pgqueue.canvas import compile_workflow

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def app() -> Iterator[pgqueue.App]:
    application = pgqueue.App(UNREACHABLE)
    yield application
    application.close()


@pytest.fixture
def t(app: pgqueue.App) -> Any:
    class Tasks:
        @staticmethod
        @app.task(name="a")
        def a(*args: Any) -> None: ...

        @staticmethod
        @app.task(name="b")
        def b(*args: Any) -> None: ...

    return Tasks


def test_chain_links_each_step_to_the_one_before(app: pgqueue.App, t: Any) -> None:
    plan = compile_workflow(app, pgqueue.chain(t.a.s(1), t.b.s(), t.a.si(9)))
    assert [s.request.task_name for s in plan.steps] == ["a", "b", "a"]
    assert plan.edges == [(0, 1, "result", 0), (1, 2, "result", 0)]
    assert [s.waiting_for for s in plan.steps] == [0, 1, 1]
    assert [s.takes_result for s in plan.steps] == [True, True, False]
    assert plan.output == [2] and not plan.many


def test_a_group_in_a_chain_feeds_a_chord_with_positions(app: pgqueue.App, t: Any) -> None:
    flow = t.a.s() | pgqueue.group(t.b.s(), pgqueue.chain(t.a.s(), t.b.s())) | t.a.s()
    plan = compile_workflow(app, flow)
    # a0 -> b1, a0 -> a2 -> b3; [b1, b3] -> a4
    assert plan.edges == [
        (0, 1, "result", 0),
        (0, 2, "result", 0),
        (2, 3, "result", 0),
        (1, 4, "results", 0),
        (3, 4, "results", 1),
    ]
    assert plan.steps[4].waiting_for == 2
    assert plan.tree["type"] == "chain"


def test_nested_groups_add_their_members_and_a_group_ends_with_a_list(
    app: pgqueue.App, t: Any
) -> None:
    plan = compile_workflow(app, pgqueue.group(pgqueue.group(t.a.s(), t.b.s()), t.a.s()))
    assert plan.output == [0, 1, 2] and plan.many
    assert plan.edges == []


def test_link_follows_the_output_and_link_error_waits_on_every_step(
    app: pgqueue.App, t: Any
) -> None:
    plan = compile_workflow(
        app, pgqueue.chord([t.a.s(1), t.a.s(2)], t.b.s()), link=t.a.s(), link_error=t.b.s()
    )
    assert [s.role for s in plan.steps] == ["step"] * 4 + ["link_error"]
    assert (2, 3, "result", 0) in plan.edges  # the chord's callback -> link
    assert [e for e in plan.edges if e[2] == "error"] == [(i, 4, "error", 0) for i in range(4)]
    assert plan.steps[4].waiting_for == 4
    assert plan.output == [2]  # the link is not the workflow's result


def test_countdown_of_a_waiting_step_counts_from_its_release(app: pgqueue.App, t: Any) -> None:
    plan = compile_workflow(
        app, pgqueue.chain(t.a.s().set(countdown=5), t.b.s().set(countdown=timedelta(seconds=7)))
    )
    assert plan.steps[0].request.countdown == 5.0 and plan.steps[0].delay == 0.0
    assert plan.steps[1].request.countdown is None and plan.steps[1].delay == 7.0


def test_bad_canvases_are_refused(app: pgqueue.App, t: Any) -> None:
    with pytest.raises(pgqueue.WorkflowError, match="header is empty"):
        pgqueue.chord([], t.a.s())
    with pytest.raises(pgqueue.WorkflowError, match="chain needs at least one"):
        pgqueue.chain()
    with pytest.raises(TypeError, match=r"call \.s\(\) on the task"):
        pgqueue.group(t.a)  # the task, not a signature
    with pytest.raises(pgqueue.WorkflowError, match="link_error takes signatures"):
        compile_workflow(app, t.a.s(), link_error=pgqueue.chain(t.b.s()))
    with pytest.raises(pgqueue.WorkflowError, match="empty list"):
        compile_workflow(app, t.a.s(), link=[])
    with pytest.raises(pgqueue.ConfigurationError, match="countdown or eta"):
        from datetime import datetime, timezone

        compile_workflow(app, t.a.s().set(countdown=1, eta=datetime.now(timezone.utc)))


def test_workflows_are_refused_in_eager_mode(app: pgqueue.App, t: Any) -> None:
    from pgqueue.testing import eager

    with eager(app), pytest.raises(pgqueue.ConfigurationError, match="eager mode"):
        pgqueue.chain(t.a.s(), t.b.s()).apply_async()
