"""What `pgqueue worker --app pgqueue.contrib.django.worker` loads: Django set up first (from
DJANGO_SETTINGS_MODULE), so that every installed app's tasks are registered, then the App.
`manage.py pgqueue_worker` names it for you; the children of `--pool process` load it too."""

from __future__ import annotations

import os

import django
from django.apps import apps

from pgqueue._logging import revive_closed_handlers
from pgqueue.errors import ConfigurationError

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise ConfigurationError(
        "set DJANGO_SETTINGS_MODULE (e.g. DJANGO_SETTINGS_MODULE=mysite.settings) to run the "
        "worker of a Django project, or run `python manage.py pgqueue_worker`"
    )
if not apps.ready:
    django.setup()
    # Django's logging setup closes the handlers configured before it: `pgqueue worker`'s own,
    # when it loads this module.
    revive_closed_handlers()

from . import app

__all__ = ["app"]
