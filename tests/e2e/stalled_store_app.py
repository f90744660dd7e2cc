"""The receiver of the stalled-store test: FastAPI, Redis with short timeouts and many retries.

REDIS_CLIENT picks an asyncio ("async") or synchronous ("sync") client. Both time out a
socket read after 1 s and retry ten times with backoff, as a user's client may: the store
must answer 503 within its deadline (twice the socket timeout) all the same. Every
handler run appends ``<webhook-id> <pid>`` to EVENTS_LOG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from fastapi import FastAPI
from redis.backoff import ExponentialBackoff

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, RedisIdempotencyStore, current_delivery
from carecycle_webhooks.fastapi import webhook_view

EVENTS_LOG = Path(os.environ["EVENTS_LOG"])

options: dict[str, Any] = {
    "socket_timeout": 1,
    "socket_connect_timeout": 1,
    "retry_on_error": [redis.TimeoutError, redis.ConnectionError],
}
client: Any
if os.environ["REDIS_CLIENT"] == "async":
    retry = redis.asyncio.retry.Retry(ExponentialBackoff(), 10)
    client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], retry=retry, **options)
else:
    client = redis.Redis.from_url(
        os.environ["REDIS_URL"], retry=redis.retry.Retry(ExponentialBackoff(), 10), **options
    )
webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"], idempotency_store=RedisIdempotencyStore(client))


@webhooks.on("customer.created")
def created(event: CustomerCreatedEvent) -> None:
    with EVENTS_LOG.open("a") as log:
        log.write(f"{current_delivery().webhook_id} {os.getpid()}\n")


app = FastAPI()
app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
