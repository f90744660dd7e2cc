"""A worker process of the Django store tests, killed (SIGKILL) in the middle of its handler.

Run as ``python -m tests.adapters.django_worker``, with the database's settings as JSON in
``CARECYCLE_TEST_DATABASE`` and a signed delivery as JSON on stdin. It handles the
delivery with a `DjangoIdempotencyStore`; its handler writes an `Effect` row, prints
``inside`` and waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure({"default": json.loads(os.environ["CARECYCLE_TEST_DATABASE"])})

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, current_delivery
from carecycle_webhooks.django import DjangoIdempotencyStore
from tests.adapters.django_effects.models import Effect
from tests.conftest import SECRET


def main() -> None:
    delivery = json.load(sys.stdin)
    webhooks = Dispatcher(SECRET, idempotency_store=DjangoIdempotencyStore())

    @webhooks.on("customer.created")
    def write_then_hang(event: CustomerCreatedEvent) -> None:
        Effect.objects.create(webhook_id=current_delivery().webhook_id, event_id=event.id)
        print("inside", flush=True)  # noqa: T201 - the test kills this process now
        time.sleep(60)

    webhooks.handle(delivery["body"], delivery["headers"])
    print("the handler was not killed", flush=True)  # noqa: T201 - the test sees it fail


if __name__ == "__main__":
    main()
