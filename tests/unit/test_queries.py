"""Statements run on SQLAlchemy connections keep every parameter once translated."""

from __future__ import annotations

import sqlalchemy as sa

from pgqueue import queries
from pgqueue.enqueue import JobRequest


def test_as_sqlalchemy_turns_pyformat_placeholders_into_named_binds() -> None:
    assert queries.as_sqlalchemy("SELECT %(a)s, %(b_2)s") == "SELECT :a, :b_2"


def test_as_sqlalchemy_unescapes_literal_percent_signs() -> None:
    assert queries.as_sqlalchemy("SELECT format('%%s', %(x)s)") == "SELECT format('%s', :x)"


def test_insert_statements_bind_exactly_the_request_parameters() -> None:
    # SQLAlchemy's text() does not see `:name::type` as a bind, so a `%(name)s::type` cast
    # slipped into an insert statement would silently lose its parameter; this catches it.
    due_now = JobRequest("default", "t", "[]", "{}", 0, None, None, 3)
    later = JobRequest("default", "t", "[]", "{}", 0, None, 5.0, 3)
    for request, statement in ((due_now, queries.INSERT_JOB_NOW), (later, queries.INSERT_JOB)):
        assert request.statement == statement
        compiled = sa.text(queries.as_sqlalchemy(statement)).compile()
        assert set(compiled.params) == set(request.params())
