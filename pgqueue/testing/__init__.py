"""What users need to test their own tasks: throwaway databases, drain(), assertions on what
was enqueued, and an eager mode. The pytest plugin (`pgqueue.testing.plugin`) gives fixtures
over these; nothing here needs pytest.

>>> from pgqueue.testing import assert_enqueued, drain
>>> def test_signup(pgqueue_app):
...     signup("ada@example.com")
...     assert_enqueued(send_welcome, args=["ada@example.com"])
...     assert [ran.status for ran in drain(pgqueue_app)] == ["succeeded"]
"""

from pgqueue.testing._assertions import ANY, assert_enqueued, assert_not_enqueued, enqueued
from pgqueue.testing._databases import (
    create_database,
    drop_database,
    server_dsn,
    template_database,
    throwaway_database,
    using_database,
)
from pgqueue.testing._drain import DrainLimitReached, Ran, adrain, drain
from pgqueue.testing._eager import EagerJob, eager

__all__ = [
    "ANY",
    "DrainLimitReached",
    "EagerJob",
    "Ran",
    "adrain",
    "assert_enqueued",
    "assert_not_enqueued",
    "create_database",
    "drain",
    "drop_database",
    "eager",
    "enqueued",
    "server_dsn",
    "template_database",
    "throwaway_database",
    "using_database",
]
