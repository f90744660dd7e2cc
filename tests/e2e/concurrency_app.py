"""The receiver of the concurrency tests: FastAPI, a shared Redis store, handlers that leave a trace.

Every completed handler appends ``<webhook-id> <pid>`` to EVENTS_LOG (appends of one short
line are atomic across processes). A customer.created whose externalId is "slow" blocks
on its first run, after writing its worker's pid to RUNNING_DIR/<webhook-id>, so that a
test can kill that worker in the middle of the handler.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from pathlib import Path

import redis.asyncio
from fastapi import FastAPI

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    RedisIdempotencyStore,
    current_delivery,
)
from carecycle_webhooks.fastapi import webhook_view

EVENTS_LOG = Path(os.environ["EVENTS_LOG"])
RUNNING_DIR = Path(os.environ["RUNNING_DIR"])

client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=1, socket_connect_timeout=1)
webhooks = Dispatcher(
    os.environ["CARECYCLE_WEBHOOK_SECRET"],
    idempotency_store=RedisIdempotencyStore(client),
    lease=datetime.timedelta(seconds=float(os.environ.get("LEASE_SECONDS", "120"))),
)


def _done() -> None:
    with EVENTS_LOG.open("a") as log:
        log.write(f"{current_delivery().webhook_id} {os.getpid()}\n")


@webhooks.on("customer.created")
async def created(event: CustomerCreatedEvent) -> None:
    marker = RUNNING_DIR / current_delivery().webhook_id
    if event.external_id == "slow" and not marker.exists():
        marker.write_text(str(os.getpid()))
        await asyncio.sleep(60)  # killed long before this ends
    await asyncio.sleep(0.01)
    _done()


@webhooks.on("customer.updated")
def updated(event: CustomerUpdatedEvent) -> None:
    _done()


@webhooks.on("call.completed")
async def call(event: CallCompletedEvent) -> None:
    await asyncio.sleep(0.005)
    _done()


app = FastAPI()
app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
