"""What the three benchmark apps share: the secret, the peer's svix Webhook and our Dispatchers.

Started by ``bench_http.py`` (the secret comes in ``BENCH_WEBHOOK_SECRET``); not meant to
be run by hand. Each app has the same three routes:

* ``POST /bare``: the status quo, ``svix.webhooks.Webhook(secret).verify(body, headers)``
  (the ``Webhook`` built once, at import) and ``json.loads(body)``, then 200.
* ``POST /ours``: ``webhook_view(dispatcher)``, a `Dispatcher` with an idempotency store
  and a trivial handler for each event type. ``BENCH_STORE`` picks the store:
  ``memory`` (`InMemoryIdempotencyStore`, the default), ``sqlite`` (`SQLiteIdempotencyStore`
  on the file ``BENCH_SQLITE_PATH``) or ``redis`` (`RedisIdempotencyStore` on ``BENCH_REDIS_URL``).
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
    RedisIdempotencyStore,
    SQLiteIdempotencyStore,
)

SECRET = os.environ["BENCH_WEBHOOK_SECRET"]
BARE_RESPONSE = b'{"status":"ok"}'

svix_webhook = Webhook(SECRET)  # built once: fair to the peer


def store() -> InMemoryIdempotencyStore | SQLiteIdempotencyStore | RedisIdempotencyStore:
    """The idempotency store that ``BENCH_STORE`` names (one per dispatcher)."""
    kind = os.environ.get("BENCH_STORE", "memory")
    if kind == "sqlite":
        return SQLiteIdempotencyStore(os.environ["BENCH_SQLITE_PATH"])
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(
            os.environ["BENCH_REDIS_URL"], socket_timeout=2, socket_connect_timeout=2
        )
        return RedisIdempotencyStore(client)
    return InMemoryIdempotencyStore()


def sync_dispatcher() -> Dispatcher:
    """A dispatcher whose handlers are plain functions."""
    webhooks = Dispatcher(SECRET, idempotency_store=store())

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
    webhooks = Dispatcher(SECRET, idempotency_store=store())

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
