"""A complete Django receiver in one file (a real project puts these lines in settings.py and urls.py).

Run it (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... gunicorn --chdir examples django_app:application -b 127.0.0.1:8000 -w 4

Every worker records the processed webhook-ids in one SQLite file (``WEBHOOK_DB``, see
``_shared.py``), so a retry is handled once whichever worker it reaches, and after a
restart. Set ``REDIS_URL`` when several machines serve the endpoint.
"""

from __future__ import annotations

import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],  # the webhook view is CSRF-exempt
)

from _shared import make_dispatcher  # noqa: E402 - after settings, as Django requires
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from carecycle_webhooks.django import webhook_view  # noqa: E402

webhooks = make_dispatcher()


def health(_request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("webhooks", webhook_view(webhooks)),
    path("health", health),
]

application = get_wsgi_application()
