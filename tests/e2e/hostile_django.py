"""The Django receiver of the hostile-load tests, under WSGI (gunicorn) and ASGI (uvicorn).

``asgi_application`` is wrapped by ``limit_webhook_bodies``; ``unguarded_asgi_application``
is Django's own, for comparison.
"""

from __future__ import annotations

import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="hostile-load-tests-only",  # noqa: S106 - a test project
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
)

from django.core.asgi import get_asgi_application  # noqa: E402 - after settings, as Django requires
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher  # noqa: E402
from carecycle_webhooks.django import limit_webhook_bodies, webhook_view  # noqa: E402

webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"])


@webhooks.on("customer.created")
def created(event: CustomerCreatedEvent) -> None:
    print("received", event.id, flush=True)  # noqa: T201 - the test reads the server's log


def health(_request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("webhooks", webhook_view(webhooks)), path("health", health)]

application = get_wsgi_application()
unguarded_asgi_application = get_asgi_application()
asgi_application = limit_webhook_bodies(unguarded_asgi_application)
