"""What the three benchmark apps share: the secret, the peer's svix Webhook and our Dispatchers.

Started by ``bench_http.py`` (the secret comes in ``BENCH_WEBHOOK_SECRET``); not meant to
be run by hand. Each app has the same three routes:

* ``POST /bare``: the status quo, ``svix.webhooks.Webhook(secret).verify(body, headers)``
  (the ``Webhook`` built once, at import) and ``json.loads(body)``, then 200.
* ``POST /ours``: ``webhook_view(dispatcher)``, a `Dispatcher` with an
  `InMemoryIdempotencyStore` and a trivial handler for each event type.
* ``GET /health``: for the start-up wait.
"""

from __future__ import annotations

import os

from svix.webhooks import Webhook

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
)

SECRET = os.environ["BENCH_WEBHOOK_SECRET"]
BARE_RESPONSE = b'{"status":"ok"}'

svix_webhook = Webhook(SECRET)  # built once: fair to the peer


def sync_dispatcher() -> Dispatcher:
    """A dispatcher whose handlers are plain functions."""
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())

    @webhooks.on("customer.created")
    def customer_created(event: CustomerCreatedEvent) -> None:
        _ = event.id

    @webhooks.on("customer.updated")
    def customer_updated(event: CustomerUpdatedEvent) -> None:
        _ = event.id

    @webhooks.on("call.completed")
    def call_completed(event: CallCompletedEvent) -> None:
        _ = event.id

    return webhooks


def async_dispatcher() -> Dispatcher:
    """A dispatcher whose handlers are coroutine functions (awaited on the event loop)."""
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())

    @webhooks.on("customer.created")
    async def customer_created(event: CustomerCreatedEvent) -> None:
        _ = event.id

    @webhooks.on("customer.updated")
    async def customer_updated(event: CustomerUpdatedEvent) -> None:
        _ = event.id

    @webhooks.on("call.completed")
    async def call_completed(event: CallCompletedEvent) -> None:
        _ = event.id

    return webhooks
