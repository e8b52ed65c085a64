"""The shop served by an ASGI server, with pgqueue's dashboard under /pgqueue/:

    PGQUEUE_DASHBOARD_TOKEN=... uvicorn djshop.asgi:application

The dashboard asks for that token (or PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD)
at its login page; without any, this module refuses to load, saying what to set.
"""

import os

from django.core.asgi import get_asgi_application

from pgqueue.contrib.django import dashboard_asgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djshop.settings")
application = dashboard_asgi(get_asgi_application())
