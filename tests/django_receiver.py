"""A minimal Django project serving ``webhook_view`` at ``webhooks/``, for the command line's tests.

Run as ``python -m tests.django_receiver debug|production``: it serves on a free loopback
port with wsgiref, prints the port on its first line, and runs until it is terminated.
The route ends in a slash, as Django's do, and CommonMiddleware's APPEND_SLASH is on (its
default): a POST to ``/webhooks`` is answered 301 (DEBUG off) or with a RuntimeError page
(DEBUG on). In its own process, because Django's settings are global. The secret comes
from ``CARECYCLE_WEBHOOK_SECRET``; the ``customer.created`` handler raises.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings

settings.configure(
    DEBUG=sys.argv[1:] == ["debug"],
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="not-secret-only-for-a-test-receiver",  # noqa: S106 - a test project's key
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    LOGGING_CONFIG=None,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings.configure
from django.urls import path  # noqa: E402

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher  # noqa: E402
from carecycle_webhooks.django import webhook_view  # noqa: E402

webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"])


@webhooks.on("customer.created")
def fails(event: CustomerCreatedEvent) -> None:
    raise RuntimeError(f"could not store customer {event.id}")


urlpatterns = [path("webhooks/", webhook_view(webhooks))]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_Quiet)
    sys.stdout.write(f"{server.server_port}\n")
    sys.stdout.flush()
    server.serve_forever()
