"""What the three example receivers share: configuration from the environment and the handlers.

Environment:
    CARECYCLE_WEBHOOK_SECRET: the endpoint's ``whsec_...`` secret (several, space-separated,
        while rotating).
    WEBHOOK_DB: optional, the SQLite file in which every worker process of this machine
        records the processed webhook-ids (`SQLiteIdempotencyStore`); by default
        ``carecycle-webhooks.sqlite3`` next to this file. Its directory must exist.
    REDIS_URL: optional, e.g. ``redis://127.0.0.1:6379/0``: deduplicate across workers and
        machines in Redis instead of the SQLite file.
    EVENTS_LOG: optional path of a JSON-lines file; each processed event appends one line
        (webhook-id, event type, id), standing in for your CRM or database.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    IdempotencyStore,
    RedisIdempotencyStore,
    SQLiteIdempotencyStore,
    UnknownEvent,
    current_delivery,
)

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("example")
_write_lock = threading.Lock()
DEFAULT_DB = Path(__file__).with_name("carecycle-webhooks.sqlite3")


def _record(event: Event) -> None:
    path = os.environ.get("EVENTS_LOG")
    record_id = event.payload.get("id") if isinstance(event, UnknownEvent) else event.id
    delivery = current_delivery()
    line = json.dumps(
        {"webhook_id": delivery.webhook_id, "event_type": event.event_type, "id": str(record_id)}
    )
    if path:
        with _write_lock, open(path, "a", encoding="utf-8") as file:  # noqa: PTH123 - one short append
            file.write(line + "\n")


def make_store(*, use_async_redis: bool = False) -> IdempotencyStore:
    """Redis when REDIS_URL is set, else the SQLite file WEBHOOK_DB that every worker shares."""
    url = os.environ.get("REDIS_URL")
    if not url:
        # One file for every worker process of this machine: a retry that reaches another
        # worker, or comes after a restart, is still answered as a duplicate.
        return SQLiteIdempotencyStore(os.environ.get("WEBHOOK_DB") or DEFAULT_DB)
    client: Any
    if use_async_redis:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    else:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return RedisIdempotencyStore(client)


def make_dispatcher(*, use_async_redis: bool = False) -> Dispatcher:
    """The dispatcher with the example's handlers registered."""
    # The secret (or several, while rotating) from CARECYCLE_WEBHOOK_SECRET.
    webhooks = Dispatcher(idempotency_store=make_store(use_async_redis=use_async_redis))
    register(webhooks)
    return webhooks


def register(webhooks: Dispatcher) -> None:
    """Typed handlers: mypy checks each parameter against its event type."""

    @webhooks.on("customer.created")
    def customer_created(event: CustomerCreatedEvent) -> None:
        log.info("new customer %s (%s), do-not-call=%s", event.id, event.status, event.do_not_call)
        _record(event)

    @webhooks.on("customer.updated")
    def customer_updated(event: CustomerUpdatedEvent) -> None:
        log.info("customer %s updated at %s", event.id, event.updated_at.isoformat())
        _record(event)

    @webhooks.on("call.completed")
    async def call_completed(event: CallCompletedEvent) -> None:
        log.info("call %s: %s after %s ms", event.id, event.disposition, event.duration_ms)
        _record(event)

    @webhooks.catch_all
    def anything_else(event: Event) -> None:
        log.info("no dedicated handler for %s", event.event_type)
        _record(event)
