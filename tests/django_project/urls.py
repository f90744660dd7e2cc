"""The project's URLs: ``/webhooks/`` is `webhook_view` of a dispatcher with a `DjangoIdempotencyStore`.

Its one handler writes an `Effect` row with the ORM, in the delivery's transaction, then
injects the fault its ``webhook-id`` asks for (by suffix):

- ``-fail``: raises, on the first attempt in this process only (the retry succeeds);
- ``-drop``: on the first attempt in this process only, has the delivery's own backend
  ended by ``pg_terminate_backend`` from another connection, as a server restart ends
  every connection; the commit then fails;
- ``-kill``: in a worker process (`FAULTS.hang`), prints ``inside`` and waits to be killed.
"""

from __future__ import annotations

import sys
import threading
import time

import psycopg
from django.db import connection
from django.urls import URLPattern, path

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, current_delivery
from carecycle_webhooks.django import DjangoIdempotencyStore, webhook_view
from tests.conftest import SECRET
from tests.django_project.effects.models import Effect


class Faults:
    """The faults injected so far in this process, and whether to hang in ``-kill`` handlers."""

    def __init__(self) -> None:
        self.hang = False
        self.attempted: set[str] = set()
        self.lock = threading.Lock()

    def first_attempt(self, webhook_id: str) -> bool:
        """Whether this is the first attempt of ``webhook_id`` in this process."""
        with self.lock:
            first = webhook_id not in self.attempted
            self.attempted.add(webhook_id)
        return first


FAULTS = Faults()


class InjectedError(RuntimeError):
    """The failure a ``-fail`` handler raises on its first attempt."""


def _end_own_backend() -> None:
    """End this thread's database session from another connection, as a server restart would."""
    cursor = connection.cursor()  # not `with`: django-stubs' __enter__ returns typing.Self (3.11)
    try:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    assert row is not None
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
        connect_timeout=5,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [row[0]])


webhooks = Dispatcher(SECRET, idempotency_store=DjangoIdempotencyStore())


@webhooks.on("customer.created")
def write_effect(event: CustomerCreatedEvent) -> None:
    """Write one `Effect` row, then inject the fault the ``webhook-id`` names."""
    webhook_id = current_delivery().webhook_id
    Effect.objects.create(webhook_id=webhook_id, event_id=event.id)
    if webhook_id.endswith("-kill") and FAULTS.hang:
        sys.stdout.write("inside\n")
        sys.stdout.flush()
        time.sleep(60)  # the test kills this process now
    if webhook_id.endswith("-fail") and FAULTS.first_attempt(webhook_id):
        raise InjectedError
    if webhook_id.endswith("-drop") and FAULTS.first_attempt(webhook_id):
        _end_own_backend()


urlpatterns: list[URLPattern] = [path("webhooks/", webhook_view(webhooks))]
