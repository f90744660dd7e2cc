"""The receiver of the customer-order end-to-end tests: ``Dispatcher(skip_out_of_order=True)``.

FastAPI (``app``) on the Redis store at REDIS_URL (an asyncio client) when it is set,
else Flask (``flask_app``) on the SQLite store at SQLITE_PATH. The customer.updated handler takes a moment
(so that two deliveries of one customer overlap), then applies the update: it writes the
customer's updatedAt to APPLIED_DIR/<customer id>, and appends ``<customer id> <updatedAt>``
to APPLIED_DIR/log (appends of one short line are atomic across processes).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from fastapi import FastAPI
from flask import Flask

from carecycle_webhooks import CustomerUpdatedEvent, Dispatcher, RedisIdempotencyStore, SQLiteIdempotencyStore
from carecycle_webhooks import fastapi as fastapi_adapter
from carecycle_webhooks import flask as flask_adapter

APPLIED = Path(os.environ["APPLIED_DIR"])
HANDLER_SECONDS = 0.02

if "REDIS_URL" in os.environ:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2)
    store: RedisIdempotencyStore | SQLiteIdempotencyStore = RedisIdempotencyStore(client)
else:
    store = SQLiteIdempotencyStore(os.environ["SQLITE_PATH"])

webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"], idempotency_store=store, skip_out_of_order=True)


def apply(event: CustomerUpdatedEvent) -> None:
    stamp = event.updated_at.isoformat()
    (APPLIED / str(event.id)).write_text(stamp)
    with (APPLIED / "log").open("a") as log:
        log.write(f"{event.id} {stamp}\n")


if "REDIS_URL" in os.environ:

    @webhooks.on("customer.updated")
    async def updated_async(event: CustomerUpdatedEvent) -> None:
        await asyncio.sleep(HANDLER_SECONDS)
        apply(event)

else:

    @webhooks.on("customer.updated")
    def updated(event: CustomerUpdatedEvent) -> None:
        time.sleep(HANDLER_SECONDS)
        apply(event)


if "REDIS_URL" in os.environ:
    app = FastAPI()
    app.add_api_route("/webhooks", fastapi_adapter.webhook_view(webhooks), methods=["POST"])
    app.add_api_route("/health", lambda: "ok")
else:
    flask_app = Flask(__name__)
    flask_app.add_url_rule("/webhooks", view_func=flask_adapter.webhook_view(webhooks), methods=["POST"])
    flask_app.add_url_rule("/health", view_func=lambda: "ok")
