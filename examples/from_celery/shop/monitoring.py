"""Failure reports: a signal receiver, connected when the worker imports shop.tasks."""

import logging

from pgqueue import signals

logger = logging.getLogger("shop.failures")


@signals.task_failure.connect
def report(sender, job, error, **kwargs):
    logger.error("%s job %s failed: %s: %s", job.task, job.id, error["type"], error["message"])
