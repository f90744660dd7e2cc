"""A Django receiver configured as the Django guide teaches: CARECYCLE_WEBHOOKS, include(), LOGGING.

Served by uvicorn (``asgi_application``, the async view: ``WEBHOOKS_ASYNC=1``) and by
gunicorn (``application``, the sync view). Its handlers log through the project's own
logger; ``LOGGING`` is the guide's, with the thread name added, so that the test sees
where each handler ran.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="django-settings-e2e-only",  # noqa: S106 - a test project
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    INSTALLED_APPS=["carecycle_webhooks.django"],
    CARECYCLE_WEBHOOKS={
        "DISPATCHER": f"{__name__}.webhooks",
        "SECRET": os.environ["CARECYCLE_WEBHOOK_SECRET"],
        "ASYNC": os.environ.get("WEBHOOKS_ASYNC") == "1",
    },
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s [%(threadName)s] %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {
            "carecycle_webhooks": {"handlers": ["console"], "level": "INFO"},
            "myproject": {"handlers": ["console"], "level": "INFO"},
        },
    },
)

from django.core.asgi import get_asgi_application  # noqa: E402 - after settings, as Django requires
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

from carecycle_webhooks import (  # noqa: E402
    CallCompletedEvent,
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
)
from carecycle_webhooks.django import limit_webhook_bodies, secret_from_settings  # noqa: E402

log = logging.getLogger("myproject.webhooks")

webhooks = Dispatcher(secret_from_settings(), idempotency_store=InMemoryIdempotencyStore())


@webhooks.on("customer.created")
async def created(event: CustomerCreatedEvent) -> None:
    log.info("customer %s created", event.id)


@webhooks.on("call.completed")
def call_completed(event: CallCompletedEvent) -> None:
    raise LookupError(event.phone_number)  # a message with PHI: it must not reach the log


def health(_request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("webhooks/", include("carecycle_webhooks.django.urls")), path("health", health)]

application = get_wsgi_application()
asgi_application = limit_webhook_bodies(get_asgi_application())
